package trace

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/pipelinetest"
	"github.com/cdcsync/cdcsync/internal/testenv"
)

const ordersDDL = `CREATE TABLE orders (id bigint PRIMARY KEY, item_id bigint, quantity int, status text)`

func runTrace(t *testing.T, p *pipelinetest.Pipeline, key string) *Report {
	t.Helper()
	r, err := Run(context.Background(), p.Verify, "public.orders", key)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := WriteText(&b, r); err != nil {
		t.Fatal(err)
	}
	t.Logf("trace %s:\n%s", key, b.String())
	return r
}

// One row followed through the real pipeline: in sync once applied; in
// flight while the redis sink is stopped and a change of the row waits on
// Kafka for it; drift when its cached hash is changed behind the sink's
// back. Then a deleted row.
func TestTraceVerdicts(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	p := pipelinetest.New(t, e, []string{"public.orders"}, ordersDDL,
		`INSERT INTO orders SELECT g, 1 + g % 5, 1 + g % 3, 'created' FROM generate_series(1, 50) g`)
	p.Exec(p.Inventory, `CREATE TABLE inventory_items (item_id bigint PRIMARY KEY, on_hand bigint NOT NULL DEFAULT 0,
		reserved bigint NOT NULL DEFAULT 0, shipped bigint NOT NULL DEFAULT 0)`,
		`INSERT INTO inventory_items (item_id, on_hand) SELECT g, 1000 FROM generate_series(1, 5) g`)
	p.Start()
	p.WaitCaughtUp() // the rows are snapshotted
	p.Exec(p.Source, `UPDATE orders SET status = 'paid' WHERE id = 42`)
	p.WaitCaughtUp()

	r := runTrace(t, p, `{"id":42}`)
	if r.Verdict.State != InSync {
		t.Errorf("applied row: verdict %+v, want in sync", r.Verdict)
	}
	if !r.Source.Exists || r.Source.Row["status"] != "paid" {
		t.Errorf("source row %+v", r.Source)
	}
	if n := len(r.Kafka.Records); n != 2 || r.Kafka.Records[0].Op != "r" || r.Kafka.Records[1].Op != "u" {
		t.Fatalf("records on Kafka %+v, want the snapshot row and the update", r.Kafka.Records)
	}
	if r.RowCache == nil || r.RowCache.Position != r.Kafka.Records[1].Position {
		t.Errorf("row cache %+v, want the update's position %s", r.RowCache, r.Kafka.Records[1].Position)
	}
	if r.Projection == nil || r.Projection.Position != r.Kafka.Records[1].Position || r.Item == nil || r.Availability == nil {
		t.Errorf("inventory side: projection %+v item %+v availability %+v", r.Projection, r.Item, r.Availability)
	}
	// --json: the same report for machines.
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Kafka struct {
			Records []struct {
				Offset   int64  `json:"offset"`
				Position string `json:"position"`
				Op       string `json:"op"`
			} `json:"records"`
		} `json:"kafka"`
		Verdict Verdict `json:"verdict"`
	}
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if back.Verdict.State != InSync || len(back.Kafka.Records) != 2 || back.Kafka.Records[1].Position != r.Kafka.Records[1].Position {
		t.Errorf("JSON report %s", js)
	}

	// Held back: the redis sink is stopped, the change is on Kafka and
	// applied by the inventory sink only.
	p.StopSink(config.SinkRedis)
	p.Exec(p.Source, `UPDATE orders SET status = 'shipped' WHERE id = 42`)
	p.WaitCaughtUp(config.SinkInventory)
	r = runTrace(t, p, `{"id":42}`)
	if r.Verdict.State != InFlight || !strings.Contains(r.Verdict.Behind, "1 change(s) behind Kafka") ||
		len(r.Verdict.Details) != 1 || !strings.Contains(r.Verdict.Details[0], "row cache") ||
		!strings.Contains(r.Verdict.Details[0], `status "paid" (source "shipped")`) {
		t.Errorf("held back: verdict %+v, want in flight for the row cache, 1 change behind", r.Verdict)
	}

	// Applied again; then tampered with in Redis.
	p.StartSink(config.SinkRedis)
	p.WaitCaughtUp()
	if r = runTrace(t, p, `{"id":42}`); r.Verdict.State != InSync {
		t.Errorf("after the redis sink caught up: verdict %+v, want in sync", r.Verdict)
	}
	if err := p.RDB.HSet(context.Background(), "cdc:public.orders:42", "quantity", "99").Err(); err != nil {
		t.Fatal(err)
	}
	r = runTrace(t, p, `{"id":42}`)
	if r.Verdict.State != Drift || len(r.Verdict.Details) != 1 ||
		!strings.Contains(r.Verdict.Details[0], `quantity "99" (source "`) {
		t.Errorf("tampered: verdict %+v, want drift naming quantity", r.Verdict)
	}

	// The availability cache of order 43's item (item 4) tampered with:
	// its version is still the row's, so it is drift, not a refresh in
	// flight.
	if err := p.RDB.Set(context.Background(), "inventory:available:4", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r = runTrace(t, p, `{"id":43}`)
	if r.Verdict.State != Drift || len(r.Verdict.Details) != 1 ||
		!strings.Contains(r.Verdict.Details[0], "availability inventory:available:4: 1, inventory_items says") {
		t.Errorf("tampered availability: verdict %+v, want drift naming inventory:available:4", r.Verdict)
	}

	// A deleted row: gone from the source and the row cache, a tombstone
	// in the projection; in sync.
	p.Exec(p.Source, `DELETE FROM orders WHERE id = 7`)
	p.WaitCaughtUp()
	r = runTrace(t, p, `{"id":7}`)
	if r.Verdict.State != InSync || r.Source.Exists || r.RowCache.Exists || !r.Projection.Deleted {
		t.Errorf("deleted row: %+v", r)
	}
	if recs := r.Kafka.Records; len(recs) < 3 || recs[len(recs)-1].Op != "tombstone" || recs[len(recs)-2].Op != "d" {
		t.Errorf("deleted row's records %+v, want ... d, tombstone", recs)
	}
}

func TestTraceBadArguments(t *testing.T) {
	var cfg config.Verify
	for _, c := range []struct{ table, key string }{{"orders", `{"id":1}`}, {"public.orders", `42`}, {"public.orders", `{}`}} {
		if _, err := Run(context.Background(), cfg, c.table, c.key); err == nil || !strings.Contains(err.Error(), "bad trace arguments") {
			t.Errorf("trace --table %s --key %s: %v, want a usage error", c.table, c.key, err)
		}
	}
}

// With CDCSYNC_ENCODING=debezium the records' keys are Debezium's (their
// schema wrapper hashes them to another partition) and their values too:
// trace still finds and reads them, and the row is in sync.
func TestTraceDebeziumEncoding(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	p := pipelinetest.New(t, e, []string{"public.orders"}, ordersDDL,
		`INSERT INTO orders SELECT g, 1 + g % 5, 1 + g % 3, 'created' FROM generate_series(1, 50) g`)
	p.Exec(p.Inventory, `CREATE TABLE inventory_items (item_id bigint PRIMARY KEY, on_hand bigint NOT NULL DEFAULT 0,
		reserved bigint NOT NULL DEFAULT 0, shipped bigint NOT NULL DEFAULT 0)`)
	p.Capture.Encoding = config.Encoding{Encoding: "debezium", SchemasEnable: true, DecimalHandling: "precise",
		TimePrecision: "adaptive", IntervalHandling: "numeric", BinaryHandling: "bytes", HstoreHandling: "json",
		UnavailablePlaceholder: "__debezium_unavailable_value"}
	p.Start()
	p.WaitCaughtUp()
	p.Exec(p.Source, `UPDATE orders SET status = 'paid' WHERE id = 42`)
	p.WaitCaughtUp()
	r := runTrace(t, p, `{"id":42}`)
	if n := len(r.Kafka.Records); n != 2 || r.Kafka.Records[0].Op != "r" || r.Kafka.Records[1].Op != "u" {
		t.Fatalf("records on Kafka %+v, want the snapshot row and the update", r.Kafka.Records)
	}
	if r.Verdict.State != InSync || r.RowCache == nil || r.RowCache.Position != r.Kafka.Records[1].Position {
		t.Errorf("verdict %+v, row cache %+v, want in sync at the update's position", r.Verdict, r.RowCache)
	}
}

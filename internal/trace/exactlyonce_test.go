package trace

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/consistency"
	"github.com/cdcsync/cdcsync/internal/pipelinetest"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/sink"
)

// With CDCSYNC_DELIVERY=exactly-once every partition ends with a
// transaction marker, an offset no consumer is handed. The tools that
// read a topic to its end must step over it: the sinks mark their offset
// past it once idle (or status never sees them caught up), trace and
// `replay topic` stop at the end instead of waiting for a record that
// never comes.
func TestExactlyOnceTopicsAreReadToTheEnd(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	p := pipelinetest.New(t, e, []string{"public.orders"}, ordersDDL,
		`INSERT INTO orders SELECT g, 1 + g % 5, 1 + g % 3, 'created' FROM generate_series(1, 50) g`)
	p.Exec(p.Inventory, `CREATE TABLE inventory_items (item_id bigint PRIMARY KEY, on_hand bigint NOT NULL DEFAULT 0,
		reserved bigint NOT NULL DEFAULT 0, shipped bigint NOT NULL DEFAULT 0)`,
		`INSERT INTO inventory_items (item_id, on_hand) SELECT g, 1000 FROM generate_series(1, 5) g`)
	p.Capture.Delivery = "exactly-once"
	p.Start()
	p.WaitCaughtUp() // the rows are snapshotted
	p.Exec(p.Source, `UPDATE orders SET status = 'paid' WHERE id = 42`)
	waited := time.Now()
	p.WaitCaughtUp() // status: every sink's lag 0 against the last stable offsets
	t.Logf("caught up after the update in %v", time.Since(waited))

	// Read your writes: a token taken after a write on an idle source is
	// reached once every partition of the topic has a watermark past it
	// (watermarks go into the Kafka transactions, one per partition).
	pool, err := pgxpool.New(context.Background(), p.Capture.SourceURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	p.Exec(p.Source, `UPDATE orders SET quantity = 3 WHERE id = 7`)
	tok, err := consistency.TakeToken(context.Background(), pool, consistency.WithSlot(p.Capture.Slot))
	if err != nil {
		t.Fatal(err)
	}
	waitStart := time.Now()
	if err := consistency.WaitRedis(context.Background(), p.RDB, config.SinkRedis, tok, 15*time.Second); err != nil {
		t.Errorf("read-your-writes wait for %s on an idle exactly-once pipeline: %v", tok, err)
	} else {
		t.Logf("read-your-writes wait: %v", time.Since(waitStart))
	}

	start := time.Now()
	r := runTrace(t, p, `{"id":42}`)
	if r.Verdict.State != InSync || len(r.Kafka.Records) != 2 {
		t.Errorf("trace: verdict %+v, %d records on Kafka; want in sync, the snapshot row and the update", r.Verdict, len(r.Kafka.Records))
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("trace took %v: it waited at a transaction marker", d)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stats, err := sink.Replay(ctx, p.Sink, config.SinkRedis, sink.Beginning(), sink.End(), nil, nil)
	if err != nil {
		t.Fatalf("replay topic of exactly-once topics: %v", err)
	}
	if stats.Messages != 52 {
		t.Errorf("replay read %d changes, want 52 (50 snapshot rows, 2 updates)", stats.Messages)
	}
}

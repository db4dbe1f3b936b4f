package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/sink"
)

// startServices starts Postgres, Redis and a broker for one test.
func startServices(t *testing.T) *testenv.Env {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs services (skipped with -short)")
	}
	e, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// opsStores are an order database and inventory store in e, filled with
// orders and the inventory rows and Redis keys the sinks would write.
type opsStores struct {
	e        *testenv.Env
	src, inv string
	rdb      *redis.Client
}

func newOpsStores(t *testing.T, e *testenv.Env) *opsStores {
	t.Helper()
	s := &opsStores{e: e, src: e.PG.CreateDB(t), inv: e.PG.CreateDB(t)}
	ctx := context.Background()
	mustExec := func(db string, sql ...string) {
		if err := e.PG.Exec(ctx, db, sql...); err != nil {
			t.Fatal(err)
		}
	}
	mustExec(s.src,
		`CREATE TABLE orders (id bigint PRIMARY KEY, item_id bigint, quantity int, status text)`,
		`INSERT INTO orders VALUES (1, 7, 2, 'created'), (2, 7, 1, 'shipped')`)
	mustExec(s.inv,
		`CREATE TABLE inventory_items (item_id bigint PRIMARY KEY, on_hand bigint NOT NULL DEFAULT 0,
			reserved bigint NOT NULL DEFAULT 0, shipped bigint NOT NULL DEFAULT 0)`,
		`INSERT INTO inventory_items VALUES (7, 10, 2, 1)`)
	s.rdb = redis.NewClient(&redis.Options{Addr: e.Redis.Addr()})
	t.Cleanup(func() { _ = s.rdb.Close() })
	for _, cmd := range [][]any{
		{"SET", "inventory:available:7", "7"},
		{"HSET", "cdc:public.orders:1", "id", "1", "item_id", "7", "quantity", "2", "status", "created"},
		{"HSET", "cdc:public.orders:2", "id", "2", "item_id", "7", "quantity", "1", "status", "shipped"},
		// The versions the sinks keep beside each value (verify checks them).
		{"HSET", sink.AvailabilityVersionKey, "7", "1"},
		{"SET", sink.VersionKeyOfRow("cdc:public.orders:1"), "00000000010000000000000000000100"},
		{"SET", sink.VersionKeyOfRow("cdc:public.orders:2"), "00000000010000000000000000000100"},
	} {
		if err := s.rdb.Do(ctx, cmd...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *opsStores) env() []string {
	return []string{
		"CDCSYNC_SOURCE_URL=" + s.e.PG.URL(s.src),
		"CDCSYNC_INVENTORY_URL=" + s.e.PG.URL(s.inv),
		"CDCSYNC_REDIS_URL=" + s.e.Redis.URL(),
		"CDCSYNC_KAFKA_BROKERS=" + strings.Join(s.e.Kafka.Brokers(), ","),
	}
}

func TestVerifyCommand(t *testing.T) {
	e := startServices(t)
	s := newOpsStores(t, e)
	ctx := context.Background()

	r := runBinary(t, s.env(), "verify")
	if r.code != 0 || !strings.Contains(r.stdout, "row_cache public.orders") || !strings.HasSuffix(r.stdout, "\nno drift\n") {
		t.Fatalf("consistent stores: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	r = runBinary(t, s.env(), "verify", "--json")
	var report struct {
		Drifted int64 `json:"drifted"`
		Checks  []struct {
			Name     string `json:"name"`
			Compared int64  `json:"compared"`
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &report); err != nil || r.code != 0 || report.Drifted != 0 || len(report.Checks) != 4 {
		t.Fatalf("--json: exit %d, %v, %s", r.code, err, r.stdout)
	}

	// Drift: exit 1, the item and the key named with expected and actual.
	if err := e.PG.Exec(ctx, s.inv, `UPDATE inventory_items SET reserved = 3 WHERE item_id = 7`); err != nil {
		t.Fatal(err)
	}
	if err := s.rdb.HSet(ctx, "cdc:public.orders:2", "status", "paid").Err(); err != nil {
		t.Fatal(err)
	}
	r = runBinary(t, s.env(), "verify")
	for _, want := range []string{`item 7: differs: reserved expected "2", actual "3"`,
		`cdc:public.orders:2: differs: status expected "shipped", actual "paid"`,
		`inventory:available:7: differs: value expected "6", actual "7"`, "drift: 3 items or keys differ"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("drift output lacks %q", want)
		}
	}
	if r.code != 1 {
		t.Errorf("drift: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	r = runBinary(t, s.env(), "verify", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &report); err != nil || r.code != 1 || report.Drifted != 3 {
		t.Errorf("--json with drift: exit %d, %v, %s", r.code, err, r.stdout)
	}

	// Errors: exit 2.
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	bad := append(s.env(), "CDCSYNC_SOURCE_URL=postgres://cdc:hunter2@127.0.0.1:"+strconv.Itoa(port)+"/orders?connect_timeout=2")
	r = runBinary(t, bad, "verify")
	if r.code != 2 || !strings.Contains(r.stderr, "cdcsync verify: ") || strings.Contains(r.stderr, "hunter2") {
		t.Errorf("unreachable database: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runBinary(t, s.env(), "verify", "--wait")
	if r.code != 2 || !strings.Contains(r.stderr, "flag needs an argument: -wait") {
		t.Errorf("--wait without duration: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runBinary(t, s.env(), "verify", "now")
	if r.code != 2 || !strings.Contains(r.stderr, `unexpected argument "now"`) {
		t.Errorf("argument: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runBinary(t, append(s.env(), "CDCSYNC_SLOT=nothing_here"), "verify", "--wait", "5s")
	if r.code != 2 || !strings.Contains(r.stderr, "replication slot does not exist: nothing_here") {
		t.Errorf("--wait without slot: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runBinary(t, nil, "verify")
	if r.code != 2 || r.stderr != "cdcsync: CDCSYNC_SOURCE_URL: required but not set\n" {
		t.Errorf("no configuration: exit %d, stderr %q", r.code, r.stderr)
	}
}

// --wait returns once the slot and the sinks' groups have caught up;
// here nothing is behind: the slot is confirmed to the current WAL
// position and the topic is empty.
func TestVerifyWaitCaughtUp(t *testing.T) {
	e := startServices(t)
	s := newOpsStores(t, e)
	if err := e.PG.Exec(context.Background(), s.src,
		`SELECT pg_create_logical_replication_slot('cdcsync', 'pgoutput')`,
		`SELECT pg_replication_slot_advance('cdcsync', pg_current_wal_lsn())`); err != nil {
		t.Fatal(err)
	}
	if err := e.Kafka.CreateTopic("cdc.public.orders", 2); err != nil {
		t.Fatal(err)
	}
	r := runBinary(t, s.env(), "verify", "--wait", "20s")
	if r.code != 0 || !strings.Contains(r.stderr, "pipeline caught up after") || !strings.HasSuffix(r.stdout, "no drift\n") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

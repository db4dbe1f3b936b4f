package verify

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/pipelinetest"
	"github.com/cdcsync/cdcsync/internal/testenv"
)

// TestInvalidatedSlotWhenNeededEndsExact: with CDCSYNC_SNAPSHOT=
// when_needed, the slot is invalidated by max_slot_wal_keep_size while
// capture is stopped and rows are deleted, updated and inserted; the Redis
// sink is stopped during the whole re-snapshot. Capture creates the slot
// again, reads the table again and writes the resnapshot-done marker; the
// sinks drop what was deleted in the gap, and verify finds no drift.
func TestInvalidatedSlotWhenNeededEndsExact(t *testing.T) {
	s := newStores(t)
	ctx := context.Background()
	pg, err := testenv.StartPostgres(testenv.WithSetting("max_slot_wal_keep_size", "1MB"), testenv.WithSetting("max_wal_size", "64MB"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Close)
	db := pg.CreateDB(t)
	exec := func(sql ...string) {
		t.Helper()
		if err := pg.Exec(ctx, db, sql...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`CREATE TABLE orders (id bigint PRIMARY KEY, item_id bigint, quantity int, status text, note text)`,
		`INSERT INTO orders SELECT g, 1 + g % 7, 1 + g % 3, 'created', NULL FROM generate_series(1, 500) g`)
	s.cfg.SourceURL = pg.URL(db)
	p := pipelinetest.NewFor(t, s.e, s.cfg)
	p.Capture.Snapshot = "when_needed"
	s.cfg = p.Verify
	p.Start()
	p.WaitCaughtUp()
	exec(`UPDATE orders SET status = 'paid' WHERE id % 3 = 0`)
	p.WaitCaughtUp()

	// The gap: capture and the Redis sink stopped; deletes (what only a
	// sweep can remove), updates and inserts while the slot is lost.
	p.StopCapture()
	p.StopSink(config.SinkRedis)
	exec(`DELETE FROM orders WHERE id % 10 = 0`,
		`UPDATE orders SET status = 'shipped', quantity = quantity + 1 WHERE id % 7 = 0`,
		`INSERT INTO orders SELECT g, 1 + g % 7, 2, 'created', NULL FROM generate_series(1001, 1100) g`)
	conn, err := pgx.Connect(ctx, pg.URL(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(90 * time.Second)
	for {
		// A few MB of WAL past the limit, then a checkpoint removes it.
		exec(`INSERT INTO orders SELECT 5000000 + g, 1, 1, 'created', repeat('x', 1000) FROM generate_series(1, 3000) g`,
			`DELETE FROM orders WHERE id > 5000000`, `SELECT pg_switch_wal()`, `CHECKPOINT`)
		var status *string
		_ = conn.QueryRow(ctx, `SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1`, p.Capture.Slot).Scan(&status)
		if status != nil && *status == "lost" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slot was not invalidated within 90s")
		}
	}

	p.StartCapture()
	p.WaitCaughtUp(config.SinkInventory)
	if n := counterValue(t, p.CaptureMetrics, "cdcsync_capture_slot_recreated_total", "slot_invalidated"); n != 1 {
		t.Errorf("cdcsync_capture_slot_recreated_total{reason=\"slot_invalidated\"} = %v, want 1", n)
	}
	// After the new slot exists: a delete the stream carries.
	exec(`DELETE FROM orders WHERE id = 1001`, `UPDATE orders SET status = 'cancelled' WHERE id = 1`)
	p.WaitCaughtUp(config.SinkInventory)
	p.StartSink(config.SinkRedis)
	p.WaitCaughtUp()

	r := s.verify()
	if r.Drifted != 0 {
		for _, c := range r.Checks {
			for _, d := range c.Drifts {
				t.Error(d.Describe(c.Name))
			}
		}
		t.Fatalf("drifted %d after the re-snapshot", r.Drifted)
	}
	for _, c := range r.Checks {
		if c.Compared == 0 {
			t.Errorf("%s compared nothing", c.Label())
		}
	}
}

// counterValue is the value of counter name with the given reason label in
// reg (0 when absent).
func counterValue(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

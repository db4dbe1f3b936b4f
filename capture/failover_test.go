package capture

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// outageWriters runs 4 writers that insert, update and delete orders on the
// database at url until stopped, riding out outages (they reconnect: the
// server is killed and replaced under them). It returns the number of
// statements that succeeded.
func outageWriters(t *testing.T, url string, rows int64) (stop func() int64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ops atomic.Int64
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			next := rows + int64(w+1)*10_000_000
			var conn *pgx.Conn
			defer func() {
				if conn != nil {
					conn.Close(context.Background())
				}
			}()
			for ctx.Err() == nil {
				if conn == nil {
					c, err := pgx.Connect(ctx, url)
					if err != nil {
						time.Sleep(100 * time.Millisecond)
						continue
					}
					conn = c
				}
				var err error
				switch r := rng.IntN(10); {
				case r < 5:
					_, err = conn.Exec(ctx, `UPDATE orders SET quantity = quantity + 1 WHERE id = $1`, 1+rng.Int64N(rows))
				case r < 7:
					_, err = conn.Exec(ctx, `DELETE FROM orders WHERE id = $1`, 1+rng.Int64N(rows))
				default:
					next++
					_, err = conn.Exec(ctx, `INSERT INTO orders VALUES ($1, $2, 1, 'created', NULL)`, next, rng.IntN(100))
				}
				if err != nil {
					conn.Close(context.Background())
					conn = nil
					continue
				}
				ops.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	var once sync.Once
	stop = func() int64 {
		once.Do(func() { cancel(); wg.Wait() })
		return ops.Load()
	}
	t.Cleanup(func() { stop() })
	return stop
}

// slotExists reports whether db on pg has the replication slot.
func slotExists(t *testing.T, pg *testenv.Postgres, db, slot string) bool {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), pg.URL(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// TestFailoverToStandbyRefusedWithInitial: the order database fails over to
// a physical streaming standby, which has the data and capture's records
// but not the logical slot, while 4 writers insert, update and delete.
// Capture, reconnecting to the same URL (the promoted standby takes over
// the primary's port), must notice the lost slot and, with
// CDCSYNC_SNAPSHOT=initial, refuse with the documented error: no slot
// created on the new primary, nothing confirmed, nothing produced.
func TestFailoverToStandbyRefusedWithInitial(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	primary, err := testenv.StartPostgres(testenv.WithSetting("wal_keep_size", "64MB"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(primary.Close)
	db := primary.CreateDB(t)
	if err := primary.Exec(ctx, db, ordersDDL,
		`INSERT INTO orders SELECT g, g % 100, 1, 'created', NULL FROM generate_series(1, 2000) g`); err != nil {
		t.Fatal(err)
	}
	standby, err := primary.StartStandby()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(standby.Close)

	cfg := testConfig(e, db)
	cfg.SourceURL = primary.URL(db)
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	reg := prometheus.NewRegistry()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	go func() { done <- Run(runCtx, cfg, logger, reg) }()

	stopWriters := outageWriters(t, primary.URL(db), 2000)
	waitFor(t, 60*time.Second, "snapshot and some changes on the topic", func() bool {
		return topicCount(t, e.Kafka.Brokers(), topic) >= 2500
	})
	// The standby has replayed capture's record of the slot (and the
	// writers' changes so far) before the primary dies.
	waitFor(t, 30*time.Second, "standby to replay capture's source record", func() bool {
		var n int
		c, err := pgx.Connect(ctx, standby.URL(db))
		if err != nil {
			return false
		}
		defer c.Close(ctx)
		_ = c.QueryRow(ctx, `SELECT count(*) FROM cdcsync.capture_source WHERE slot = $1`, cfg.Slot).Scan(&n)
		return n == 1
	})

	// The same URL now reaches the new primary (a virtual IP or DNS switch).
	if err := standby.TakeOver(ctx, primary.Postgres); err != nil {
		t.Fatal(err)
	}

	var runErr error
	select {
	case runErr = <-done:
	case <-time.After(120 * time.Second):
		t.Fatal("capture did not stop within 120s of the failover")
	}
	// Writers keep going against the new primary, deletes included,
	// while capture stays stopped.
	time.Sleep(time.Second)
	if n := stopWriters(); n == 0 {
		t.Fatal("writers wrote nothing")
	}
	if !errors.Is(runErr, ErrSlotLost) {
		t.Fatalf("capture stopped with %v, want ErrSlotLost", runErr)
	}
	for _, want := range []string{"slot_missing", "timeline 2, capture recorded 1", "CDCSYNC_SNAPSHOT=initial", "confirms nothing",
		"DELETE FROM \"cdcsync\".\"capture_source\" WHERE slot = '" + cfg.Slot + "'", "when_needed"} {
		if !strings.Contains(runErr.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, runErr)
		}
	}
	if slotExists(t, standby, db, cfg.Slot) {
		t.Error("capture created a slot on the new primary")
	}
	if v := gaugeValue(t, reg, "cdcsync_capture_slot_lost"); v != 1 {
		t.Errorf("cdcsync_capture_slot_lost = %v, want 1", v)
	}
	checkStatusLost(t, cfg, "slot_missing")
	// A restart refuses the same way (the verdict does not depend on the
	// process that saw the failover).
	err = runCaptureUntilError(t, cfg)
	if !errors.Is(err, ErrSlotLost) {
		t.Fatalf("restarted capture: %v, want ErrSlotLost", err)
	}
	if slotExists(t, standby, db, cfg.Slot) {
		t.Error("the restarted capture created a slot")
	}
}

// TestInvalidatedSlotRefusedWithInitial: while capture is stopped, writers
// fill more WAL than max_slot_wal_keep_size allows, a checkpoint removes it
// and the slot is invalidated (wal_status 'lost'). Capture must refuse with
// CDCSYNC_SNAPSHOT=initial and leave the slot as it is.
func TestInvalidatedSlotRefusedWithInitial(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	pg, err := testenv.StartPostgres(testenv.WithSetting("max_slot_wal_keep_size", "1MB"), testenv.WithSetting("max_wal_size", "64MB"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Close)
	db := pg.CreateDB(t)
	if err := pg.Exec(ctx, db, ordersDDL, `INSERT INTO orders SELECT g, g % 100, 1, 'created', NULL FROM generate_series(1, 1000) g`); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(e, db)
	cfg.SourceURL = pg.URL(db)
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	stop := startCapture(t, cfg)
	waitFor(t, 60*time.Second, "snapshot", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 1000 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	before := topicCount(t, e.Kafka.Brokers(), topic)

	stopWriters := outageWriters(t, pg.URL(db), 1000)
	conn, err := pgx.Connect(ctx, pg.URL(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	waitFor(t, 90*time.Second, "the slot to be invalidated", func() bool {
		// A few MB of WAL past the limit, then a checkpoint removes it.
		mustExec(t, conn, `INSERT INTO orders SELECT 5000000 + g, 1, 1, 'created', repeat('x', 1000) FROM generate_series(1, 3000) g`,
			`DELETE FROM orders WHERE id > 5000000`, `SELECT pg_switch_wal()`, `CHECKPOINT`)
		var status *string
		_ = conn.QueryRow(ctx, `SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&status)
		return status != nil && *status == "lost"
	})
	stopWriters()

	err = runCaptureUntilError(t, cfg)
	if !errors.Is(err, ErrSlotLost) {
		t.Fatalf("err = %v, want ErrSlotLost", err)
	}
	for _, want := range []string{"slot_invalidated", "max_slot_wal_keep_size", "pg_drop_replication_slot('" + cfg.Slot + "')"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if after := topicCount(t, e.Kafka.Brokers(), topic); after != before {
		t.Errorf("capture produced %d records over the invalidated slot", after-before)
	}
	if !slotExists(t, pg, db, cfg.Slot) {
		t.Error("capture dropped the invalidated slot; the operator decides")
	}
	checkStatusLost(t, cfg, "slot_invalidated")
}

// checkStatusLost: `cdcsync status` (its collector) reports the slot lost
// for the same reason as capture.
func checkStatusLost(t *testing.T, cfg config.Capture, reason string) {
	t.Helper()
	r, text := captureStatus(t, cfg)
	if r.Slot.Lost != reason {
		t.Errorf("status: slot lost = %q (%s), want %q", r.Slot.Lost, r.Slot.LostDetail, reason)
	}
	if !strings.Contains(text, "LOST ("+reason+")") {
		t.Errorf("status text does not say the slot is lost:\n%s", text)
	}
}

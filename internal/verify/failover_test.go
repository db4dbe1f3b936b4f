package verify

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/pipelinetest"
	"github.com/cdcsync/cdcsync/internal/testenv"
)

// TestFailoverToStandbyWhenNeededEndsExact: the order database fails over
// to a physical standby (no logical slot there) while 4 writers insert,
// update and delete; the promoted standby takes over the primary's port
// and the writers go on against it. With CDCSYNC_SNAPSHOT=when_needed
// capture creates the slot again, in a new source epoch, and reads the
// table again; the sinks drop what was deleted while no slot recorded
// (after the promotion, before the new slot), and verify finds no drift.
func TestFailoverToStandbyWhenNeededEndsExact(t *testing.T) {
	s := newStores(t)
	ctx := context.Background()
	primary, standby, db, p := failoverPipeline(t, s, 1000)
	stopWriters := failoverWriters(t, primary.URL(db), 1000)
	time.Sleep(time.Second) // writers at work before the failover (not an assertion)
	waitStandby(t, standby.URL(db), p.Capture.Slot)

	// The same URL now reaches the new primary (a virtual IP or DNS switch).
	if err := standby.TakeOver(ctx, primary.Postgres); err != nil {
		t.Fatal(err)
	}
	// Deleted on the new primary, most likely before capture is back
	// (the writers delete meanwhile too).
	if err := standby.Exec(ctx, db, `DELETE FROM orders WHERE id % 10 = 0`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // writers at work on the new primary
	if n := stopWriters(); n == 0 {
		t.Fatal("writers wrote nothing")
	}
	p.WaitCaughtUp()

	r := s.verify()
	if r.Drifted != 0 {
		for _, c := range r.Checks {
			for _, d := range c.Drifts {
				t.Error(d.Describe(c.Name))
			}
		}
		t.Fatalf("drifted %d after the failover", r.Drifted)
	}
}

// failoverPipeline starts an order database (primary) with rows orders and
// a physical standby of it, and a pipeline with CDCSYNC_SNAPSHOT=
// when_needed on the primary, caught up; s.cfg is the pipeline's.
func failoverPipeline(t *testing.T, s *stores, rows int) (primary, standby *testenv.Postgres, db string, p *pipelinetest.Pipeline) {
	t.Helper()
	ctx := context.Background()
	primary, err := testenv.StartPostgres(testenv.WithSetting("wal_keep_size", "64MB"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(primary.Close)
	db = primary.CreateDB(t)
	if err := primary.Exec(ctx, db, `CREATE TABLE orders (id bigint PRIMARY KEY, item_id bigint, quantity int, status text)`,
		fmt.Sprintf(`INSERT INTO orders SELECT g, 1 + g %% 20, 1, 'created' FROM generate_series(1, %d) g`, rows)); err != nil {
		t.Fatal(err)
	}
	if standby, err = primary.StartStandby(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(standby.Close)
	s.cfg.SourceURL = primary.URL(db)
	p = pipelinetest.NewFor(t, s.e, s.cfg)
	p.Capture.Snapshot = "when_needed"
	s.cfg = p.Verify
	p.Start()
	p.WaitCaughtUp()
	return primary, standby, db, p
}

// waitStandby waits until the standby at url has replayed capture's
// record of slot (the source it streams from).
func waitStandby(t *testing.T, url, slot string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if c, err := pgx.Connect(context.Background(), url); err == nil {
			_ = c.QueryRow(context.Background(), `SELECT count(*) FROM cdcsync.capture_source WHERE slot = $1`, slot).Scan(&n)
			c.Close(context.Background())
		}
		if n == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the standby did not replay capture's source record within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// failoverWriters runs 4 writers that update, delete and insert orders at
// url until stopped, reconnecting through the failover. It returns the
// number of statements that succeeded.
func failoverWriters(t *testing.T, url string, rows int64) (stop func() int64) {
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
			for ctx.Err() == nil {
				if conn == nil {
					if conn, _ = pgx.Connect(ctx, url); conn == nil {
						time.Sleep(100 * time.Millisecond)
						continue
					}
				}
				var err error
				switch r := rng.IntN(10); {
				case r < 5:
					_, err = conn.Exec(ctx, `UPDATE orders SET quantity = quantity + 1, status = 'paid' WHERE id = $1`, 1+rng.Int64N(rows))
				case r < 7:
					_, err = conn.Exec(ctx, `DELETE FROM orders WHERE id = $1`, 1+rng.Int64N(rows))
				default:
					next++
					_, err = conn.Exec(ctx, `INSERT INTO orders VALUES ($1, $2, 1, 'created')`, next, 1+rng.IntN(20))
				}
				if err != nil {
					conn.Close(context.Background())
					conn = nil
					continue
				}
				ops.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
			if conn != nil {
				conn.Close(context.Background())
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

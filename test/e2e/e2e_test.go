package e2e

import (
	"context"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/status"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/internal/verify"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env)) }

const (
	items         = 1000
	initialOrders = 2000
	writers       = 4
	writeFor      = 15 * time.Second
)

// TestOrdersWithCaptureRunning is issue 3 end to end: an order database
// with existing orders, capture and both sinks running, four concurrent
// writers creating, paying, shipping, cancelling, re-itemising, resizing
// and deleting orders over 1,000 items for 15 seconds. Once the pipeline
// has caught up with everything committed, verify must find no drift:
// every item's reserved and shipped equal the sums over its orders
// exactly, the availability cache equals on_hand − reserved − shipped,
// and the row cache equals the orders table.
func TestOrdersWithCaptureRunning(t *testing.T) {
	runOrdersWorkload(t, writeFor)
}

// runOrdersWorkload is TestOrdersWithCaptureRunning's scenario, writing
// for the given time with the pipeline's configuration adjusted; it
// returns the running pipeline once verify found no drift.
func runOrdersWorkload(t *testing.T, writeFor time.Duration, adjust ...func(*config.Capture, *config.Sink)) *running {
	t.Helper()
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	src, inv := e.PG.CreateDB(t), e.PG.CreateDB(t)
	mustExec(t, e, src,
		`CREATE TABLE orders (id bigserial PRIMARY KEY, item_id bigint NOT NULL, quantity int NOT NULL,
			status text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())`,
		`INSERT INTO orders (item_id, quantity, status)
			SELECT 1 + g % 1000, 1 + g % 5, (ARRAY['created', 'paid', 'shipped', 'cancelled'])[1 + g % 4]
			FROM generate_series(1, 2000) g`)
	// The warehouse's stock; the sink owns reserved and shipped.
	mustExec(t, e, inv,
		`CREATE TABLE inventory_items (item_id bigint PRIMARY KEY, on_hand bigint NOT NULL DEFAULT 0,
			reserved bigint NOT NULL DEFAULT 0, shipped bigint NOT NULL DEFAULT 0)`,
		`INSERT INTO inventory_items (item_id, on_hand) SELECT g, 500 FROM generate_series(1, 1000) g`)

	p := startPipeline(t, e, src, inv, adjust...)
	// Writes start once capture streams: the snapshot holds the initial
	// orders, the stream everything after.
	p.waitCaughtUp(t, 60*time.Second)

	pool, err := pgxpool.New(ctx, e.PG.URL(src))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var maxID atomic.Int64
	maxID.Store(initialOrders)
	stats := &writeStats{}
	wctx, stop := context.WithTimeout(ctx, writeFor)
	defer stop()
	var (
		wg   sync.WaitGroup
		errs = make(chan error, writers)
	)
	seed := rand.Uint64()
	t.Logf("writer seed %d", seed)
	for i := range writers {
		w := &writer{pool: pool, rnd: rand.New(rand.NewPCG(seed, uint64(i))), items: items, maxID: &maxID,
			stats: stats, period: 4 * time.Millisecond}
		wg.Go(func() {
			if err := w.run(wctx); err != nil {
				errs <- err
				stop()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("writer: %v", err)
	}
	t.Logf("writes that changed rows: %s", stats)
	for _, kind := range allOps {
		if stats.changed[kind] == 0 {
			t.Errorf("no %s changed anything: the workload does not cover it", kind)
		}
	}

	started := time.Now()
	p.waitCaughtUp(t, 60*time.Second)
	t.Logf("caught up %s after the writers stopped", time.Since(started).Round(time.Millisecond))

	v, err := verify.New(ctx, p.verifyCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	r, err := v.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := verify.WriteText(&b, r); err != nil {
		t.Fatal(err)
	}
	if r.Drifted != 0 {
		t.Fatalf("drift after the pipeline caught up:\n%s", b.String())
	}
	compared := map[string]int64{}
	for _, c := range r.Checks {
		compared[c.Name] = c.Compared
	}
	var orders int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&orders); err != nil {
		t.Fatal(err)
	}
	if compared[verify.CheckInventory] < items || compared[verify.CheckAvailability] < items || compared[verify.CheckRowCache] < orders {
		t.Errorf("verify compared too little (%v) for %d items and %d orders:\n%s", compared, items, orders, b.String())
	}
	t.Logf("no drift: %v compared", compared)

	// A control: a change the sinks never made is found.
	mustExec(t, e, inv, `UPDATE inventory_items SET reserved = reserved + 1 WHERE item_id = 7`)
	if r, err = v.Run(ctx); err != nil || r.Drifted != 2 {
		t.Errorf("verify after tampering with item 7: %v, %+v; want 2 drifts (the item and its availability)", err, r)
	}
	mustExec(t, e, inv, `UPDATE inventory_items SET reserved = reserved - 1 WHERE item_id = 7`)
	return p
}

func mustExec(t *testing.T, e *testenv.Env, db string, sql ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.PG.Exec(ctx, db, sql...); err != nil {
		t.Fatal(err)
	}
}

// waitCaughtUp waits until both sinks have applied everything committed in
// the order database before the call.
func (p *running) waitCaughtUp(t *testing.T, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := status.New(ctx, p.statusCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for { // the slot appears once capture has started
		r, err := c.Collect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r.Slot.Exists {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("capture did not create its slot")
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := c.WaitCaughtUp(ctx, 100*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
}

type testLog struct{ t *testing.T }

func (w testLog) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

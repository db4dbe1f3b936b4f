package e2e

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/internal/verify"
)

// TestWarehouseStockChangesWhileOrdersFlow is issue 14's stock test: the
// warehouse changes on_hand of random items (single items and whole
// ranges, directly in the inventory store, as it owns the column) while
// two writers change orders and capture and both sinks run. At rest verify
// finds no drift (the availability cache follows on_hand, not only
// orders), and a stock change at rest, with no order, reaches the cache
// too.
func TestWarehouseStockChangesWhileOrdersFlow(t *testing.T) {
	const items = 200
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	src, inv := e.PG.CreateDB(t), e.PG.CreateDB(t)
	mustExec(t, e, src,
		`CREATE TABLE orders (id bigserial PRIMARY KEY, item_id bigint NOT NULL, quantity int NOT NULL,
			status text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())`,
		`INSERT INTO orders (item_id, quantity, status)
			SELECT 1 + g % 200, 1 + g % 5, (ARRAY['created', 'paid', 'shipped', 'cancelled'])[1 + g % 4]
			FROM generate_series(1, 500) g`)
	mustExec(t, e, inv,
		`CREATE TABLE inventory_items (item_id bigint PRIMARY KEY, on_hand bigint NOT NULL DEFAULT 0,
			reserved bigint NOT NULL DEFAULT 0, shipped bigint NOT NULL DEFAULT 0)`,
		`INSERT INTO inventory_items (item_id, on_hand) SELECT g, 500 FROM generate_series(1, 200) g`)
	// Its own Redis: availability keys are global names.
	rd, err := testenv.StartRedis()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rd.Close)
	p := startPipeline(t, e, src, inv, func(_ *config.Capture, sc *config.Sink) { sc.RedisURL = rd.URL() })
	p.waitCaughtUp(t, 60*time.Second)

	orders, err := pgxpool.New(ctx, e.PG.URL(src))
	if err != nil {
		t.Fatal(err)
	}
	defer orders.Close()
	stock, err := pgxpool.New(ctx, e.PG.URL(inv))
	if err != nil {
		t.Fatal(err)
	}
	defer stock.Close()

	var maxID atomic.Int64
	maxID.Store(500)
	stats := &writeStats{}
	wctx, stop := context.WithTimeout(ctx, 6*time.Second)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	for i := range 2 {
		w := &writer{pool: orders, rnd: rand.New(rand.NewPCG(seed, uint64(i))), items: items, maxID: &maxID,
			stats: stats, period: 4 * time.Millisecond}
		wg.Go(func() {
			if err := w.run(wctx); err != nil {
				errs <- err
			}
		})
	}
	var stockChanges atomic.Int64
	wg.Go(func() {
		rnd := rand.New(rand.NewPCG(seed, 99))
		for wctx.Err() == nil {
			var err error
			if rnd.IntN(10) == 0 { // a delivery for a range of items
				lo := 1 + rnd.Int64N(items)
				_, err = stock.Exec(wctx, `UPDATE inventory_items SET on_hand = on_hand + 20 WHERE item_id BETWEEN $1 AND $1 + 15`, lo)
			} else {
				_, err = stock.Exec(wctx, `UPDATE inventory_items SET on_hand = on_hand + $2 WHERE item_id = $1`,
					1+rnd.Int64N(items), rnd.Int64N(11)-5)
			}
			if err != nil && wctx.Err() == nil {
				errs <- err
				return
			}
			stockChanges.Add(1)
			time.Sleep(3 * time.Millisecond)
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("writer: %v", err)
	}
	t.Logf("orders: %s; %d stock changes", stats, stockChanges.Load())

	p.waitCaughtUp(t, 60*time.Second)
	v, err := verify.New(ctx, p.verifyCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	noDrift := func(what string) {
		t.Helper()
		// The stock changes are not in the order stream that
		// waitCaughtUp follows: give their refreshes a moment.
		deadline := time.Now().Add(15 * time.Second)
		for {
			r, err := v.Run(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if r.Drifted == 0 {
				return
			}
			if time.Now().After(deadline) {
				var b strings.Builder
				_ = verify.WriteText(&b, r)
				t.Fatalf("drift %s:\n%s", what, b.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	noDrift("after the pipeline caught up")

	// At rest: a delivery for item 3, no order.
	if _, err := stock.Exec(ctx, `UPDATE inventory_items SET on_hand = on_hand + 7 WHERE item_id = 3`); err != nil {
		t.Fatal(err)
	}
	noDrift("after a stock change at rest")
}

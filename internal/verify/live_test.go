package verify

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcsync/cdcsync/internal/pipelinetest"
	"github.com/cdcsync/cdcsync/internal/testenv"
)

// liveDuration is how long the live verification runs under load: 10s in
// `make test`, CDCSYNC_LIVE_VERIFY_DURATION (e.g. 30s, `make live-verify`)
// for the full run.
func liveDuration(t *testing.T) time.Duration {
	if s := os.Getenv("CDCSYNC_LIVE_VERIFY_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CDCSYNC_LIVE_VERIFY_DURATION: %v", err)
		}
		return d
	}
	return 10 * time.Second
}

// Live verify on a healthy pipeline under load: every run compares at a
// consistent cut and finds no drift, although changes are always in
// flight. Then one inventory item is tampered with while the load goes
// on, and the next run reports it.
func TestLiveVerifyUnderLoad(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	const items = 50
	p := pipelinetest.New(t, e, []string{"public.orders"},
		`CREATE TABLE orders (id bigserial PRIMARY KEY, item_id bigint, quantity int, status text)`,
		fmt.Sprintf(`INSERT INTO orders (item_id, quantity, status) SELECT 1 + g %% %d, 1 + g %% 4, 'created' FROM generate_series(1, 500) g`, items))
	p.Exec(p.Inventory, `CREATE TABLE inventory_items (item_id bigint PRIMARY KEY, on_hand bigint NOT NULL DEFAULT 0,
		reserved bigint NOT NULL DEFAULT 0, shipped bigint NOT NULL DEFAULT 0)`,
		// One more item than the writers order: its availability is
		// tampered with below.
		fmt.Sprintf(`INSERT INTO inventory_items (item_id, on_hand) SELECT g, 100000 FROM generate_series(1, %d) g`, items+1))
	p.Start()
	p.WaitCaughtUp()

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	pool, err := pgxpool.New(ctx, p.Verify.SourceURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var wg sync.WaitGroup
	var writes atomic.Int64
	for range 4 {
		wg.Go(func() { writeOrders(ctx, t, pool, items, &writes) })
	}
	defer func() { stop(); wg.Wait() }()

	v, err := New(ctx, p.Verify)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	// The sinks keep positions once capture's first watermarks reached
	// every partition.
	for wait := time.Now().Add(30 * time.Second); ; {
		kept, why, err := v.positionsKept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if kept {
			break
		}
		if time.Now().After(wait) {
			t.Fatalf("no applied-through positions after 30s: %s", why)
		}
		time.Sleep(50 * time.Millisecond)
	}
	runs, afterCut := 0, int64(0)
	deadline := time.Now().Add(liveDuration(t))
	for time.Now().Before(deadline) {
		start := time.Now()
		r, err := v.Run(ctx)
		if err != nil {
			t.Fatalf("run %d: %v", runs+1, err)
		}
		runs++
		if r.Cut == "" {
			t.Fatalf("run %d was not at a consistent cut: %s", runs, r.NoCut)
		}
		for _, c := range r.Checks {
			afterCut += c.AfterCut
		}
		if r.Drifted != 0 {
			var b strings.Builder
			_ = WriteText(&b, r)
			t.Fatalf("run %d (cut %s, %s) on a healthy pipeline under load reports drift:\n%s", runs, r.Cut, time.Since(start), b.String())
		}
	}
	if runs < 3 || afterCut == 0 {
		t.Fatalf("%d runs, %d differences after the cut: the test did not compare under load", runs, afterCut)
	}
	t.Logf("%d live runs in %s without drift; %d items and keys changed after their cut (in flight, not drift); %d order transactions",
		runs, liveDuration(t), afterCut, writes.Load())

	// Real drift under the same load: found by the next run.
	p.Exec(p.Inventory, `UPDATE inventory_items SET reserved = reserved + 1000 WHERE item_id = 7`)
	if err := p.RDB.Set(ctx, fmt.Sprintf("inventory:available:%d", items+1), "5", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r, err := v.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	_ = WriteText(&b, r)
	if !strings.Contains(b.String(), "item 7: differs: reserved") ||
		!strings.Contains(b.String(), fmt.Sprintf(`inventory:available:%d: differs: value expected "100000", actual "5"`, items+1)) {
		t.Fatalf("tampered item 7 or availability of item %d not reported by the next run:\n%s", items+1, b.String())
	}
	t.Logf("after tampering:\n%s", b.String())
}

// writeOrders writes order transactions until ctx ends, about 100 a
// second: creates, payments, shipments, cancellations, item and quantity
// changes, deletes, counting them in n.
func writeOrders(ctx context.Context, t *testing.T, pool *pgxpool.Pool, items int, n *atomic.Int64) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var sql string
		var args []any
		item := 1 + rand.IntN(items)
		switch rand.IntN(7) {
		case 0, 1:
			sql, args = `INSERT INTO orders (item_id, quantity, status) VALUES ($1, $2, 'created')`, []any{item, 1 + rand.IntN(5)}
		case 2:
			sql = `UPDATE orders SET status = 'paid' WHERE id = (SELECT id FROM orders WHERE status = 'created' ORDER BY random() LIMIT 1)`
		case 3:
			sql = `UPDATE orders SET status = 'shipped' WHERE id = (SELECT id FROM orders WHERE status = 'paid' ORDER BY random() LIMIT 1)`
		case 4:
			sql = `UPDATE orders SET status = 'cancelled' WHERE id = (SELECT id FROM orders WHERE status IN ('created', 'paid') ORDER BY random() LIMIT 1)`
		case 5:
			sql, args = `UPDATE orders SET item_id = $1, quantity = quantity + 1 WHERE id = (SELECT id FROM orders ORDER BY random() LIMIT 1)`, []any{item}
		case 6:
			sql = `DELETE FROM orders WHERE id = (SELECT id FROM orders ORDER BY random() LIMIT 1)`
		}
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			if ctx.Err() != nil {
				return
			}
			t.Errorf("write: %v", err)
			return
		}
		n.Add(1)
	}
}

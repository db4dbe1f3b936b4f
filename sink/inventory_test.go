package sink

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestInventorySchemaCreatedIdempotently starts several sinks' schema
// set-up at once on an empty database, then again: the tables appear once,
// with DESIGN.md's inventory_items columns.
func TestInventorySchemaCreatedIdempotently(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, h.pg.URL(h.db))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	inv := &inventory{pool: pool, orders: testOrders(t)}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- inv.ensureSchema(ctx) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent schema set-up: %v", err)
		}
	}
	if err := inv.ensureSchema(ctx); err != nil {
		t.Fatalf("second schema set-up: %v", err)
	}
	rows, _ := pool.Query(ctx, `SELECT column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
		FROM information_schema.columns WHERE table_name = 'inventory_items' ORDER BY ordinal_position`)
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"item_id bigint NO ", "on_hand bigint NO 0", "reserved bigint NO 0", "shipped bigint NO 0"}
	if len(cols) != len(want) {
		t.Fatalf("inventory_items columns %q, want %q", cols, want)
	}
	for i := range want {
		if cols[i] != want[i] {
			t.Fatalf("inventory_items columns %q, want %q", cols, want)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM cdcsync_sink_state WHERE table_name = 'public.orders'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("sink state rows: %d, %v", n, err)
	}
}

package demo

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// The generator writes at about its rate, and the order database holds
// exactly the orders it believes it wrote, by status; each created order
// published one OrderCreated message in its transaction.
func TestGenerator(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	ctx := context.Background()
	if err := e.PG.Exec(ctx, db, ordersDDL,
		// A slot to count the outbox messages that committed.
		`SELECT pg_create_logical_replication_slot('gen', 'test_decoding')`); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, e.PG.URL(db))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	g, err := newGenerator(pool, 50, 400)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := g.run(runCtx); err != nil {
		t.Fatal(err)
	}
	writes := g.writes.Load()
	if writes < 400 || writes > 900 {
		t.Errorf("%d writes in 2s at 400/s", writes)
	}
	counts := map[string]int{}
	rows, err := pool.Query(ctx, `SELECT status, count(*) FROM public.orders GROUP BY status`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		counts[s] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if counts[statusCreated] != len(g.created) || counts[statusPaid] != len(g.paid) ||
		counts[statusShipped]+counts[statusCancelled] != len(g.finished) {
		t.Errorf("database %v; generator: %d created, %d paid, %d finished", counts, len(g.created), len(g.paid), len(g.finished))
	}
	// Every move happened. Paid orders may all have shipped by the end
	// (CI once ended with none paid after 791 writes): a shipped order
	// was paid first.
	for _, s := range []string{statusCreated, statusShipped, statusCancelled} {
		if counts[s] == 0 {
			t.Errorf("no %s orders after %d writes: %v", s, writes, counts)
		}
	}
	if counts[statusPaid]+counts[statusShipped] == 0 {
		t.Errorf("no order was paid after %d writes: %v", writes, counts)
	}
	var items int
	if err := pool.QueryRow(ctx, `SELECT count(DISTINCT item_id) FROM public.orders WHERE item_id NOT BETWEEN 1 AND 50`).Scan(&items); err != nil || items != 0 {
		t.Errorf("orders for items outside 1..50: %d %v", items, err)
	}
	var messages int64
	err = pool.QueryRow(ctx, `SELECT count(*) FROM pg_logical_slot_get_changes('gen', NULL, NULL)
		WHERE data LIKE 'message: transactional: 1 prefix: cdcsync.outbox%'`).Scan(&messages)
	if err != nil {
		t.Fatal(err)
	}
	if messages != g.creates.Load() || messages == 0 {
		t.Errorf("%d outbox messages for %d created orders", messages, g.creates.Load())
	}
}

package sink

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcsync/cdcsync/config"
)

// waitAvailabilityExact polls until every item's availability key equals
// on_hand − reserved − shipped of its row: items in want must have a key,
// and no key may differ from its row.
func (h *harness) waitAvailabilityExact(timeout time.Duration, want map[int64]bool) {
	h.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for {
		items := h.items()
		var bad []string
		for _, item := range slices.Sorted(func(yield func(int64) bool) {
			for id := range items {
				if !yield(id) {
					return
				}
			}
		}) {
			v := items[item]
			exp := strconv.FormatInt(v[0]-v[1]-v[2], 10)
			got, err := h.rdb.Get(ctx, AvailabilityKey(item)).Result()
			switch {
			case err != nil && !want[item]:
			case err != nil:
				bad = append(bad, fmt.Sprintf("item %d: missing, want %s", item, exp))
			case got != exp:
				bad = append(bad, fmt.Sprintf("item %d: %s, want %s", item, got, exp))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("availability cache wrong for %d items %s after the sink caught up: %s", len(bad), timeout, strings.Join(bad[:min(len(bad), 10)], "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (h *harness) pool() *pgxpool.Pool {
	h.t.Helper()
	pool, err := pgxpool.New(context.Background(), h.pg.URL(h.db))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(pool.Close)
	return pool
}

// TestAvailabilityFollowsOnHand lets the warehouse change on_hand of random
// items (directly in the inventory store, as it owns the column) while
// orders flow: once everything is applied the availability cache must be
// exact for every item, and a single stock change at rest must reach it
// within a few seconds, with no order for the item.
func TestAvailabilityFollowsOnHand(t *testing.T) {
	const items = 40
	h := newHarness(t, harnessOptions{items: items, onHand: 100})
	h.start(h.config(config.SinkInventory))
	pool := h.pool()
	ctx := context.Background()

	w := newWorkload(21, items)
	recs := w.generate(100, 1500)
	stocked := map[int64]bool{}
	var wg sync.WaitGroup
	wg.Go(func() {
		rnd := rand.New(rand.NewPCG(5, 6))
		for i := 0; i < 300; i++ {
			item := 1 + rnd.Int64N(items)
			if _, err := pool.Exec(ctx, `UPDATE inventory_items SET on_hand = on_hand + $2 WHERE item_id = $1`, item, rnd.Int64N(21)-10); err != nil {
				t.Error(err)
				return
			}
			stocked[item] = true
			time.Sleep(2 * time.Millisecond)
		}
	})
	for len(recs) > 0 {
		n := min(len(recs), 100)
		h.produce(recs[:n])
		recs = recs[n:]
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	h.waitApplied(60*time.Second, h.groups(config.SinkInventory)...)
	h.checkInventory(w)
	for item := range w.touched {
		stocked[item] = true
	}
	h.waitAvailabilityExact(30*time.Second, stocked)

	// At rest: the warehouse receives 7 units of an item.
	if _, err := pool.Exec(ctx, `UPDATE inventory_items SET on_hand = on_hand + 7 WHERE item_id = 3`); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	h.waitAvailabilityExact(10*time.Second, stocked)
	t.Logf("a stock change reached the availability cache in %s", time.Since(start).Round(time.Millisecond))
}

// TestAvailabilityAfterStoreRebuild rebuilds the inventory store from the
// topic (README's recovery path: an empty store, then replay topic --from
// beginning) while Redis keeps its availability keys and their versions,
// then restores older version state (as a backup would): availability
// must stay exact through new orders after each.
func TestAvailabilityAfterStoreRebuild(t *testing.T) {
	const items = 20
	h := newHarness(t, harnessOptions{items: items, onHand: 50})
	cfg := h.config(config.SinkInventory)
	// Small batches first: many refreshes, so the old store's versions run
	// far ahead of what a rebuilt one starts with.
	first := cfg
	first.BatchSize = 1
	s := h.start(first)
	ctx := context.Background()
	w := newWorkload(31, items)
	h.produce(w.generate(100, 600))
	h.waitApplied(60*time.Second, h.groups(config.SinkInventory)...)
	h.checkInventory(w)
	h.waitAvailabilityExact(30*time.Second, w.touched)
	s.stop(t)

	// The store is lost; the warehouse restocks an empty one, and the
	// sink's tables are rebuilt from the topic.
	h.exec(`DROP SCHEMA public CASCADE`, `CREATE SCHEMA public`,
		`CREATE TABLE inventory_items (item_id bigint PRIMARY KEY, on_hand bigint NOT NULL DEFAULT 0,
			reserved bigint NOT NULL DEFAULT 0, shipped bigint NOT NULL DEFAULT 0)`,
		fmt.Sprintf(`INSERT INTO inventory_items (item_id, on_hand) SELECT g, 50 FROM generate_series(1, %d) g`, items))
	if _, err := Replay(ctx, cfg, config.SinkInventory, Beginning(), End(), nil, nil); err != nil {
		t.Fatalf("replay: %v", err)
	}
	h.checkInventory(w)
	h.waitAvailabilityExact(30*time.Second, w.touched)

	// New orders after each: their refreshes must not be refused.
	moreOrders := func() {
		t.Helper()
		var more []record
		for range 300 {
			more = append(more, w.txn()...)
		}
		h.produce(more)
		h.waitApplied(60*time.Second, h.groups(config.SinkInventory)...)
		h.checkInventory(w)
		h.waitAvailabilityExact(30*time.Second, w.touched)
	}
	s = h.start(cfg)
	moreOrders()

	// A restore from a backup: the store's version state goes back.
	s.stop(t)
	h.exec(`UPDATE cdcsync_item_version SET version = 1`, `SELECT setval('cdcsync_available_version', 1)`)
	h.start(cfg)
	moreOrders()
}

package sink

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/config"
)

// TestTruncateOnManyItems truncates the orders while the item table is
// large and the orders cover only some of the items. The truncate must
// change only the items its orders counted in (not rewrite every item row
// in its transaction), refresh their availability in chunks, and leave the
// stores exact. CDCSYNC_TEST_TRUNCATE_ITEMS sets the item count (default
// 50,000; `make test-big` uses 500,000).
func TestTruncateOnManyItems(t *testing.T) {
	items := int64(50_000)
	if v := os.Getenv("CDCSYNC_TEST_TRUNCATE_ITEMS"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1000 {
			t.Fatalf("CDCSYNC_TEST_TRUNCATE_ITEMS=%q: want an integer >= 1000", v)
		}
		items = n
	}
	h := newHarness(t, harnessOptions{items: items, onHand: 10})
	h.start(h.config(config.SinkInventory))
	ctx := context.Background()

	// Orders on the first 1,000 items only.
	w := newWorkload(41, 1000)
	h.produce(w.generate(3000, 500))
	h.waitApplied(120*time.Second, h.groups(config.SinkInventory)...)
	h.checkInventory(w)
	h.waitAvailabilityExact(60*time.Second, w.touched)

	pool := h.pool()
	var before int64
	if err := pool.QueryRow(ctx, `SELECT txid_current()`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	for id := range w.live {
		w.removeLive(id)
	}
	w.lsn += 100
	start := time.Now()
	h.produce([]record{truncateRecord(at(w.lsn, w.lsn))})
	h.waitApplied(120*time.Second, h.groups(config.SinkInventory)...)
	t.Logf("truncate over %d items applied in %s", items, time.Since(start).Round(time.Millisecond))
	h.checkInventory(w)
	// Applied means refreshed: no waiting for the availability cache.
	h.waitAvailabilityExact(0, w.touched)

	var rewritten int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM inventory_items WHERE xmin::text::bigint >= $1`, before%(1<<32)).Scan(&rewritten); err != nil {
		t.Fatal(err)
	}
	if rewritten > int64(len(w.touched)) {
		t.Errorf("the truncate rewrote %d item rows; its orders counted in only %d items", rewritten, len(w.touched))
	}
}

package sink

import (
	"context"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestTombstonesExpire deletes orders and lets the tombstone horizon pass
// (CDCSYNC_TOMBSTONE_RETENTION, short here): the inventory projection's
// rows of deleted orders and the Redis version keys of deleted rows must
// go, while live orders, their version keys and the counters stay exact.
// Before the horizon a late older event is still recognised as old.
func TestTombstonesExpire(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 10, onHand: 50})
	cfg := h.config(config.SinkInventory, config.SinkRedis)
	cfg.TombstoneRetention = 3 * time.Second
	both := h.groups(config.SinkInventory, config.SinkRedis)
	ctx := context.Background()

	// All before the sinks start, so that each applies them in one batch.
	h.produce([]record{
		orderRecord(pipeline.OpCreate, at(100, 90), 1, 3, 2, "created"),
		orderRecord(pipeline.OpCreate, at(200, 190), 2, 4, 5, "paid"),
	})
	h.produce(deleteRecords(at(300, 290), 2))
	// Late and older than the delete, within the horizon: skipped, also
	// when it comes in the same batch as the delete.
	h.produce([]record{orderRecord(pipeline.OpUpdate, at(250, 240), 2, 4, 7, "paid")})
	h.start(cfg)
	h.waitApplied(30*time.Second, both...)
	if got := h.items()[4]; got[1] != 0 {
		t.Fatalf("item 4 reserved %d after the delete and a late older update, want 0", got[1])
	}
	if row := h.rowCache()["cdc:public.orders:2"]; row != nil {
		t.Fatalf("a late update older than the delete, in the delete's batch, resurrected order 2 in the row cache: %v", row)
	}

	pool := h.pool()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var tombstones int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM cdcsync_order_projection WHERE deleted`).Scan(&tombstones); err != nil {
			t.Fatal(err)
		}
		versions, err := h.rdb.Exists(ctx, "cdcver:public.orders:2").Result()
		if err != nil {
			t.Fatal(err)
		}
		if tombstones == 0 && versions == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after the deletes: %d projection tombstones, version key of deleted order 2 present: %v", tombstones, versions == 1)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var live int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM cdcsync_order_projection WHERE order_id = '1' AND NOT deleted`).Scan(&live); err != nil || live != 1 {
		t.Fatalf("live order 1 in the projection: %d (%v)", live, err)
	}
	if ttl, err := h.rdb.PTTL(ctx, "cdcver:public.orders:1").Result(); err != nil || ttl != -1 {
		t.Fatalf("version key of live order 1: TTL %v (%v), want none", ttl, err)
	}
	if got := h.items(); got[3][1] != 2 || got[4][1] != 0 {
		t.Fatalf("items after the expiry: %v", got)
	}
}

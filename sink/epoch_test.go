package sink

import (
	"context"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

// inEpoch is at(commit, change) in a source epoch.
func inEpoch(epoch uint32, commit, change uint64) pipeline.Position {
	p := at(commit, change)
	p.Epoch = epoch
	return p
}

// TestNewSourceEpochIsNewer: after a failover or a restore the source
// writes at LSNs below those the sinks already hold, in a higher source
// epoch (the position header's prefix). Both sinks must apply those events
// (an update, a delete, an insert, past an older truncate) and still skip a
// late event of the old epoch whatever its LSN.
func TestNewSourceEpochIsNewer(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 10, onHand: 50})
	both := h.groups(config.SinkInventory, config.SinkRedis)
	s := h.start(h.config(config.SinkInventory, config.SinkRedis))
	ctx := context.Background()

	h.produce([]record{orderRecord(pipeline.OpCreate, at(500, 490), 3, 9, 6, "created")})
	h.waitApplied(30*time.Second, both...)
	h.produce([]record{truncateRecord(at(800, 790))})
	h.waitApplied(30*time.Second, both...)
	h.produce([]record{
		orderRecord(pipeline.OpCreate, at(1000, 990), 1, 7, 2, "created"),
		orderRecord(pipeline.OpCreate, at(1100, 1090), 2, 7, 3, "created"),
	})
	h.waitApplied(30*time.Second, both...)

	// The new primary, epoch 1, starts far below LSN 800.
	h.produce([]record{orderRecord(pipeline.OpUpdate, inEpoch(1, 100, 90), 1, 7, 5, "paid")})
	h.produce(deleteRecords(inEpoch(1, 110, 100), 2))
	h.produce([]record{orderRecord(pipeline.OpCreate, inEpoch(1, 120, 110), 4, 8, 1, "created")})
	h.waitApplied(30*time.Second, both...)

	want := func() {
		t.Helper()
		items := h.items()
		for item, reserved := range map[int64]int64{7: 5, 8: 1, 9: 0} {
			if got := items[item]; got[1] != reserved || got[2] != 0 {
				t.Fatalf("item %d: reserved %d shipped %d, want %d 0", item, got[1], got[2], reserved)
			}
			av, err := h.rdb.Get(ctx, AvailabilityKey(item)).Result()
			if err != nil || av != strconv.FormatInt(50-reserved, 10) {
				t.Fatalf("availability of item %d = %q (%v), want %d", item, av, err, 50-reserved)
			}
		}
		rows := h.rowCache()
		wantRows := map[string]map[string]string{
			"cdc:public.orders:1": {"id": "1", "item_id": "7", "quantity": "5", "status": "paid"},
			"cdc:public.orders:4": {"id": "4", "item_id": "8", "quantity": "1", "status": "created"},
		}
		if !maps.EqualFunc(rows, wantRows, maps.Equal) {
			t.Fatalf("row cache = %v, want %v", rows, wantRows)
		}
	}
	want()

	// A late event of the old epoch, at an LSN above every epoch-1 one, is
	// older than what both sinks hold.
	h.produce([]record{orderRecord(pipeline.OpUpdate, at(1050, 1040), 1, 8, 9, "created")})
	h.waitApplied(30*time.Second, both...)
	want()
	for _, sink := range []string{config.SinkInventory, config.SinkRedis} {
		if stale := counter(t, s.reg, "cdcsync_sink_events_skipped_total", map[string]string{"sink": sink, "reason": "stale"}); stale != 1 {
			t.Errorf("%s: skipped %v stale, want 1", sink, stale)
		}
	}

	// A store from before epochs (no epoch columns) gets them, in epoch
	// 0, when the sink starts; a later epoch still wins over it.
	s.stop(t)
	h.exec(`UPDATE cdcsync_order_projection SET epoch = 0`,
		`ALTER TABLE cdcsync_order_projection DROP COLUMN epoch`, `ALTER TABLE cdcsync_sink_state DROP COLUMN truncate_epoch`)
	h.start(h.config(config.SinkInventory, config.SinkRedis))
	h.produce([]record{orderRecord(pipeline.OpUpdate, inEpoch(2, 50, 40), 4, 9, 1, "created")})
	h.waitApplied(30*time.Second, both...)
	if items := h.items(); items[8][1] != 0 || items[9][1] != 1 {
		t.Fatalf("after the upgrade, order 4 did not move from item 8 to 9: %v", items)
	}
}

// TestPositionKeyOrdersEpochs: stored positions compare byte by byte in
// stream order across source epochs, and epoch 0 keeps the form stores
// written before epochs existed hold.
func TestPositionKeyOrdersEpochs(t *testing.T) {
	ordered := []pipeline.Position{at(1, 1), at(1, 2), at(0xFFFFFFFFFF, 5), inEpoch(1, 1, 1), inEpoch(1, 9, 9), inEpoch(1795600000, 0, 1)}
	if k := positionKey(ordered[0]); len(k) != 32 {
		t.Fatalf("epoch-0 key %q: want 32 hex digits", k)
	}
	for i, p := range ordered {
		k := positionKey(p)
		back, err := ParsePositionKey(k)
		if err != nil || back != p {
			t.Fatalf("ParsePositionKey(%q) = %v, %v; want %v", k, back, err, p)
		}
		if i > 0 && positionKey(ordered[i-1]) >= k {
			t.Errorf("key of %v (%q) does not sort before that of %v (%q)", ordered[i-1], positionKey(ordered[i-1]), p, k)
		}
	}
	if _, err := ParsePositionKey("g" + positionKey(at(1, 1))); err == nil {
		t.Error("a key with g but no epoch parsed")
	}
}

// resnapshotDone sends capture's resnapshot-done control record for
// public.orders in epoch to partition: with its value, or null as
// captures before the value wrote it.
func (h *harness) resnapshotDone(epoch uint32, partition int32, withValue bool) {
	h.t.Helper()
	h.connectProducer()
	pos := inEpoch(epoch, 0, 0)
	var value sarama.Encoder
	if withValue {
		value = sarama.ByteEncoder(pipeline.ResnapshotValue("public.orders", epoch))
	}
	_, _, err := h.prod.SendMessage(&sarama.ProducerMessage{Topic: h.topic, Partition: partition, Value: value,
		Key: sarama.StringEncoder(pipeline.ResnapshotKey), Headers: []sarama.RecordHeader{
			{Key: []byte(pipeline.HeaderPosition), Value: []byte(pos.String())},
			{Key: []byte(pipeline.HeaderControl), Value: []byte(pipeline.ControlResnapshotDone)},
			{Key: []byte(pipeline.HeaderTable), Value: []byte("public.orders")},
		}})
	if err != nil {
		h.t.Fatal(err)
	}
}

// TestResnapshotDoneDropsOlderEpochs: after a re-snapshot in epoch 1
// (some orders re-emitted, one changed since), the resnapshot-done record
// removes from both stores the orders only epoch 0 had (deleted while no
// slot recorded) and keeps the rest; a late epoch-0 event is skipped, and
// the record delivered again (a restart in the middle, a replay) changes
// nothing. The record has a value (compaction keeps it); one from before,
// null, is taken too.
func TestResnapshotDoneDropsOlderEpochs(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 10, onHand: 50})
	both := h.groups(config.SinkInventory, config.SinkRedis)
	s := h.start(h.config(config.SinkInventory, config.SinkRedis))
	ctx := context.Background()
	h.produce([]record{
		orderRecord(pipeline.OpCreate, at(100, 90), 1, 7, 2, "created"),
		orderRecord(pipeline.OpCreate, at(110, 100), 2, 7, 3, "created"),
		orderRecord(pipeline.OpCreate, at(120, 110), 3, 8, 4, "paid"),
	})
	h.waitApplied(30*time.Second, both...)
	// The re-snapshot re-emits orders 1 and 3 (order 2 was deleted in the
	// gap); order 3 changes after its snapshot row.
	h.produce([]record{
		orderRecord(pipeline.OpRead, inEpoch(1, 50, 50), 1, 7, 2, "created"),
		orderRecord(pipeline.OpRead, inEpoch(1, 50, 50), 3, 8, 4, "paid"),
		orderRecord(pipeline.OpUpdate, inEpoch(1, 60, 55), 3, 8, 1, "paid"),
	})
	h.resnapshotDone(1, 0, true)
	h.waitApplied(30*time.Second, both...)

	want := func() {
		t.Helper()
		items := h.items()
		for item, reserved := range map[int64]int64{7: 2, 8: 1} {
			if got := items[item]; got[1] != reserved {
				t.Fatalf("item %d: reserved %d, want %d", item, got[1], reserved)
			}
			av, err := h.rdb.Get(ctx, AvailabilityKey(item)).Result()
			if err != nil || av != strconv.FormatInt(50-reserved, 10) {
				t.Fatalf("availability of item %d = %q (%v), want %d", item, av, err, 50-reserved)
			}
		}
		rows := h.rowCache()
		wantRows := map[string]map[string]string{
			"cdc:public.orders:1": {"id": "1", "item_id": "7", "quantity": "2", "status": "created"},
			"cdc:public.orders:3": {"id": "3", "item_id": "8", "quantity": "1", "status": "paid"},
		}
		if !maps.EqualFunc(rows, wantRows, maps.Equal) {
			t.Fatalf("row cache = %v, want %v", rows, wantRows)
		}
	}
	want()

	h.produce([]record{orderRecord(pipeline.OpUpdate, at(130, 120), 2, 7, 9, "created")})
	h.resnapshotDone(1, 2, false)
	h.waitApplied(30*time.Second, both...)
	want()
	for _, sink := range []string{config.SinkInventory, config.SinkRedis} {
		if n := counter(t, s.reg, "cdcsync_sink_events_skipped_total", map[string]string{"sink": sink, "reason": "truncated"}); n != 1 {
			t.Errorf("%s: skipped %v events as before the resnapshot, want 1", sink, n)
		}
	}
}

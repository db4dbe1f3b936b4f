package sink

import (
	"context"
	"encoding/json"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

// at is a position (commit, change) for hand-written events.
func at(commit, change uint64) pipeline.Position {
	return pipeline.Position{Commit: pglogrepl.LSN(commit), Change: pglogrepl.LSN(change)}
}

func orderRecord(op pipeline.Op, pos pipeline.Position, id, item, qty int64, status string) record {
	w := &workload{}
	after := pipeline.Row{
		{Name: "id", Value: json.RawMessage(strconv.FormatInt(id, 10))},
		{Name: "item_id", Value: json.RawMessage(strconv.FormatInt(item, 10))},
		{Name: "quantity", Value: json.RawMessage(strconv.FormatInt(qty, 10))},
		{Name: "status", Value: json.RawMessage(strconv.Quote(status))},
	}
	ev := w.event(op, pos, nil, after, nil)
	return record{key: keyJSON(id), value: ev.AppendJSON(nil), pos: pos, op: op}
}

func deleteRecords(pos pipeline.Position, id int64) []record {
	w := &workload{}
	before := pipeline.Row{{Name: "id", Value: json.RawMessage(strconv.FormatInt(id, 10))}}
	ev := w.event(pipeline.OpDelete, pos, before, nil, nil)
	return []record{{key: keyJSON(id), value: ev.AppendJSON(nil), pos: pos, op: pipeline.OpDelete}, {key: keyJSON(id), pos: pos, op: pipeline.OpDelete}}
}

func truncateRecord(pos pipeline.Position) record {
	w := &workload{}
	ev := w.event(pipeline.OpTruncate, pos, nil, nil, nil)
	return record{value: ev.AppendJSON(nil), pos: pos, op: pipeline.OpTruncate}
}

// TestLateOlderEventsAreSkipped delivers events older than what each sink
// holds (a late update, an update after a delete, an insert before a
// truncate) after the newer ones were applied: neither sink may regress,
// resurrect or count them.
func TestLateOlderEventsAreSkipped(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 10, onHand: 50})
	both := h.groups(config.SinkInventory, config.SinkRedis)
	s := h.start(h.config(config.SinkInventory, config.SinkRedis))
	ctx := context.Background()

	// Order 3 is reserved before a truncate; after it order 1 is paid for
	// 5 of item 7, order 2 is created and deleted, order 4 reserves 1 of
	// item 7.
	h.produce([]record{orderRecord(pipeline.OpCreate, at(30, 20), 3, 9, 6, "created")})
	h.waitApplied(30*time.Second, both...)
	h.produce([]record{truncateRecord(at(50, 40))})
	h.waitApplied(30*time.Second, both...)
	h.produce([]record{
		orderRecord(pipeline.OpCreate, at(100, 90), 1, 7, 2, "created"),
		orderRecord(pipeline.OpUpdate, at(200, 190), 1, 7, 5, "paid"),
		orderRecord(pipeline.OpCreate, at(300, 290), 2, 8, 4, "created"),
	})
	h.produce(deleteRecords(at(400, 390), 2))
	h.produce([]record{orderRecord(pipeline.OpCreate, at(600, 590), 4, 7, 1, "created")})
	h.waitApplied(30*time.Second, both...)

	want := func() {
		t.Helper()
		items := h.items()
		for item, rs := range map[int64][2]int64{7: {6, 0}, 8: {0, 0}, 9: {0, 0}} {
			if got := items[item]; got[1] != rs[0] || got[2] != rs[1] {
				t.Fatalf("item %d: reserved %d shipped %d, want %d %d", item, got[1], got[2], rs[0], rs[1])
			}
			av, err := h.rdb.Get(ctx, AvailabilityKey(item)).Result()
			if err != nil || av != strconv.FormatInt(50-rs[0]-rs[1], 10) {
				t.Fatalf("availability of item %d = %q (%v)", item, av, err)
			}
		}
		rows := h.rowCache()
		wantRows := map[string]map[string]string{
			"cdc:public.orders:1": {"id": "1", "item_id": "7", "quantity": "5", "status": "paid"},
			"cdc:public.orders:4": {"id": "4", "item_id": "7", "quantity": "1", "status": "created"},
		}
		if !maps.EqualFunc(rows, wantRows, maps.Equal) {
			t.Fatalf("row cache = %v, want %v", rows, wantRows)
		}
	}
	want()

	// Now the late ones: an update of order 1 older than its last change,
	// an update of deleted order 2, an update of order 3 older than the
	// truncate, and a replayed create of order 4.
	h.produce([]record{
		orderRecord(pipeline.OpUpdate, at(150, 140), 1, 8, 9, "created"),
		orderRecord(pipeline.OpUpdate, at(350, 340), 2, 8, 4, "paid"),
		orderRecord(pipeline.OpUpdate, at(45, 44), 3, 9, 6, "paid"),
		orderRecord(pipeline.OpCreate, at(600, 590), 4, 7, 1, "created"),
	})
	h.waitApplied(30*time.Second, both...)
	want()

	for _, sink := range []string{config.SinkInventory, config.SinkRedis} {
		stale := counter(t, s.reg, "cdcsync_sink_events_skipped_total", map[string]string{"sink": sink, "reason": "stale"})
		truncated := counter(t, s.reg, "cdcsync_sink_events_skipped_total", map[string]string{"sink": sink, "reason": "truncated"})
		if stale != 3 || truncated != 1 {
			t.Errorf("%s: skipped %v stale and %v truncated, want 3 and 1", sink, stale, truncated)
		}
	}
}

package sink

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/config"
)

// state is everything the sinks own, for before/after comparisons.
type state struct {
	items        map[int64][3]int64
	rows         map[string]map[string]string
	availability map[string]string
}

func (h *harness) state() state {
	h.t.Helper()
	ctx := context.Background()
	s := state{items: h.items(), rows: h.rowCache(), availability: map[string]string{}}
	iter := h.rdb.Scan(ctx, 0, "inventory:available:*", 1000).Iterator()
	for iter.Next(ctx) {
		v, err := h.rdb.Get(ctx, iter.Val()).Result()
		if err != nil {
			h.t.Fatal(err)
		}
		s.availability[iter.Val()] = v
	}
	if err := iter.Err(); err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) requireSameState(what string, before, after state) {
	h.t.Helper()
	if !maps.Equal(before.items, after.items) {
		h.t.Errorf("%s changed inventory_items", what)
	}
	if !maps.EqualFunc(before.rows, after.rows, maps.Equal) {
		h.t.Errorf("%s changed the row cache", what)
	}
	if !maps.Equal(before.availability, after.availability) {
		h.t.Errorf("%s changed the availability cache", what)
	}
}

// TestRedeliveryAndReplayChangeNothing delivers every event a second time
// (duplicates appended to the topic), then re-consumes the whole topic from
// offset 0 with fresh consumer groups into the populated sinks: the stores
// must not change, and the replaying sinks must apply nothing.
func TestRedeliveryAndReplayChangeNothing(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 300, onHand: 100})
	w := newWorkload(seed(t), 300)
	w.truncates = true
	cfg := h.config(config.SinkInventory, config.SinkRedis)
	h.start(cfg)
	both := h.groups(config.SinkInventory, config.SinkRedis)

	recs := w.generate(200, 3000)
	h.produce(recs)
	h.waitApplied(60*time.Second, both...)
	h.checkInventory(w)
	h.checkRedis(w, true, true)
	before := h.state()

	h.produce(recs)
	h.waitApplied(60*time.Second, both...)
	h.requireSameState("redelivering every event", before, h.state())

	replay := cfg
	replay.GroupPrefix = h.prefix + "-replay"
	r := h.start(replay)
	h.waitApplied(60*time.Second, replay.GroupPrefix+"-inventory", replay.GroupPrefix+"-redis")
	h.requireSameState("replaying the topic from offset 0", before, h.state())
	h.checkInventory(w)
	h.checkRedis(w, true, true)
	for _, sink := range []string{config.SinkInventory, config.SinkRedis} {
		labels := map[string]string{"sink": sink}
		applied := counter(t, r.reg, "cdcsync_sink_events_applied_total", labels)
		skipped := counter(t, r.reg, "cdcsync_sink_events_skipped_total", labels)
		if applied != 0 || skipped < float64(len(recs)) {
			t.Errorf("%s replay: applied %v, skipped %v of %d messages; want nothing applied", sink, applied, skipped, 2*len(recs))
		}
	}
}

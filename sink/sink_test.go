package sink

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/config"
)

func seed(t testing.TB) uint64 {
	s := rand.Uint64()
	t.Logf("workload seed %d", s)
	return s
}

// TestSinksMatchOrderModel runs a random order workload (snapshot rows,
// creates, payments, shipments, cancellations, item and quantity changes,
// deletes, re-keys, truncates, unchanged TOASTed columns, numbers sent as
// JSON numbers or strings) through both sinks with small batches, and
// checks the inventory invariant and both Redis caches exactly.
func TestSinksMatchOrderModel(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 1000, onHand: 500})
	w := newWorkload(seed(t), 1000)
	w.truncates = true
	cfg := h.config(config.SinkInventory, config.SinkRedis)
	cfg.BatchSize = 300
	s := h.start(cfg)

	h.produce(w.generate(500, 4000))
	h.waitApplied(60*time.Second, h.groups(config.SinkInventory, config.SinkRedis)...)
	h.checkInventory(w)
	h.checkRedis(w, true, true)

	// More changes on top of the applied state.
	h.produce(w.generate(0, 2000))
	h.waitApplied(60*time.Second, h.groups(config.SinkInventory, config.SinkRedis)...)
	h.checkInventory(w)
	h.checkRedis(w, true, true)

	for _, sink := range []string{config.SinkInventory, config.SinkRedis} {
		applied := counter(t, s.reg, "cdcsync_sink_events_applied_total", map[string]string{"sink": sink})
		dead := counter(t, s.reg, "cdcsync_sink_events_dead_lettered_total", map[string]string{"sink": sink})
		if applied == 0 || dead != 0 {
			t.Errorf("%s: applied %v, dead-lettered %v", sink, applied, dead)
		}
	}
}

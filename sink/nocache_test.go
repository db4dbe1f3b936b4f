package sink

import (
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/config"
)

// TestInventoryOnlyWithoutRedis runs the inventory sink alone where no
// Redis answers at the configured URL (the default points at localhost),
// with the availability cache switched off: it must apply every order and
// commit, not retry a Redis it was told not to use.
func TestInventoryOnlyWithoutRedis(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 20, onHand: 100})
	cfg := h.config(config.SinkInventory)
	cfg.RedisURL = "redis://127.0.0.1:1/0" // nothing listens there
	cfg.AvailabilityCache = "off"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h.start(cfg)
	w := newWorkload(11, 20)
	h.produce(w.generate(50, 300))
	h.waitApplied(60*time.Second, h.groups(config.SinkInventory)...)
	h.checkInventory(w)
}

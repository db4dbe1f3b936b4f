package sink

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/config"
)

// loseRedisData restarts Redis without its data, as a Redis without
// persistence (or with its files lost) comes back.
func (h *harness) loseRedisData() {
	h.t.Helper()
	if err := h.rd.Kill(); err != nil {
		h.t.Fatal(err)
	}
	for _, f := range []string{"appendonlydir", "appendonly.aof", "dump.rdb"} {
		if err := os.RemoveAll(filepath.Join(h.rd.Dir, f)); err != nil {
			h.t.Fatal(err)
		}
	}
	if err := h.rd.Start(); err != nil {
		h.t.Fatal(err)
	}
}

// TestRedisDataLossIsRebuilt makes Redis lose its data twice while events
// stream in: restarted without its files, then FLUSHALL. Both caches must
// end exact: the redis sink rebuilds the row cache from the topics'
// beginning (its committed offsets carry the epoch Redis lost), the
// inventory sink refreshes every item's availability. Before, the row
// cache kept only what came after the loss (and partial rows for updates
// with unchanged TOASTed columns), and availability of untouched items
// stayed missing.
func TestRedisDataLossIsRebuilt(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 1000, onHand: 1000})
	// No truncates: one after a loss would hide it (it empties the table
	// and refreshes every item).
	w := newWorkload(seed(t), 1000)
	cfg := h.config(config.SinkInventory, config.SinkRedis)
	cfg.RetryMax = 300 * time.Millisecond
	s := h.start(cfg)
	h.streamWorkload(w, 5*time.Second, func(chunk int) {
		switch chunk {
		case 60:
			t.Log("Redis: restarted without its data")
			h.loseRedisData()
		case 140:
			t.Log("Redis: FLUSHALL")
			if err := h.rdb.FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
		}
	})
	h.waitApplied(90*time.Second, h.groups(config.SinkInventory, config.SinkRedis)...)
	h.checkInventory(w)
	h.checkRedis(w, true, false)
	// The availability refresh after a loss follows a store check.
	deadline := time.Now().Add(30 * time.Second)
	for bad := h.availabilityDiff(w); len(bad) > 0; bad = h.availabilityDiff(w) {
		if time.Now().After(deadline) {
			t.Fatalf("availability cache wrong for %d items 30s after the sinks caught up: %s", len(bad), strings.Join(bad[:min(len(bad), 10)], "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if dead := counter(t, s.reg, "cdcsync_sink_events_dead_lettered_total", nil); dead != 0 {
		t.Errorf("%v messages dead-lettered", dead)
	}
}

// TestRedisEvictionPolicyRefused: a Redis whose maxmemory-policy may evict
// any key (allkeys-lru) would lose version keys silently; both sinks
// refuse to start on it with a clear error.
func TestRedisEvictionPolicyRefused(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	if err := h.rdb.ConfigSet(context.Background(), "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	for _, sink := range []string{config.SinkRedis, config.SinkInventory} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := Run(ctx, h.config(sink), slog.New(slog.DiscardHandler), nil)
		cancel()
		var cfgErr *config.Error
		if !errors.As(err, &cfgErr) || !strings.Contains(err.Error(), "maxmemory-policy allkeys-lru") {
			t.Errorf("%s sink on a Redis with allkeys-lru: %v; want a configuration error naming the policy", sink, err)
		}
	}
}

package sink

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

// readinessLog records what Run reports for /readyz.
type readinessLog struct {
	mu      sync.Mutex
	ready   bool
	reason  string
	history []string
}

func (r *readinessLog) SetReady() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ready, r.reason = true, ""
	r.history = append(r.history, "ready")
}

func (r *readinessLog) SetNotReady(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ready, r.reason = false, reason
	r.history = append(r.history, "not ready: "+reason)
}

func (r *readinessLog) get() (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready, r.reason
}

// waitFor waits until the state is ready (or not) with a reason holding
// every one of words (case-insensitive).
func (r *readinessLog) waitFor(t *testing.T, ready bool, words ...string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, reason := r.get()
		match := ok == ready
		for _, w := range words {
			match = match && strings.Contains(strings.ToLower(reason), strings.ToLower(w))
		}
		if match {
			return reason
		}
		if time.Now().After(deadline) {
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("readiness is (%v, %q), want ready=%v with %q; history:\n%s", ok, reason, ready, words, strings.Join(r.history, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReadiness follows /readyz through a sink's life: not ready before
// its topic exists (the group cannot be joined), ready once both sinks
// joined, not ready while Redis and then Postgres are down (the reason
// names them), ready again when they are back (with the changes made
// meanwhile applied), and not ready once shutting down.
func TestReadiness(t *testing.T) {
	h := newHarness(t, harnessOptions{ownPostgres: true, noTopic: true, items: 10, onHand: 50})
	cfg := h.config(config.SinkInventory, config.SinkRedis)
	cfg.RetryMax = 300 * time.Millisecond
	ready := &readinessLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	go func() {
		done <- Run(ctx, cfg, logger, prometheus.NewRegistry(), WithReadiness(ready), WithStoreCheckInterval(200*time.Millisecond))
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-done
		}
	})

	reason := ready.waitFor(t, false, "cannot join consumer group "+h.prefix)
	t.Logf("before the topic exists: %s", reason)
	h.createTopic()
	ready.waitFor(t, true)

	both := h.groups(config.SinkInventory, config.SinkRedis)
	h.produce([]record{orderRecord(pipeline.OpCreate, at(100, 90), 1, 3, 2, "created")})
	h.waitApplied(30*time.Second, both...)

	// Redis down: both sinks need it (row cache, availability cache).
	if err := h.rd.Stop(); err != nil {
		t.Fatal(err)
	}
	reason = ready.waitFor(t, false, "redis sink: store unreachable: Redis", "inventory sink: store unreachable: availability cache (Redis)")
	t.Logf("Redis down: %s", reason)
	h.produce([]record{orderRecord(pipeline.OpUpdate, at(200, 190), 1, 3, 2, "paid")})
	time.Sleep(500 * time.Millisecond) // the sinks fail to apply it and retry
	if _, reason := ready.get(); !strings.Contains(reason, "Redis") {
		t.Errorf("while applying fails: %q", reason)
	}
	if err := h.rd.Start(); err != nil {
		t.Fatal(err)
	}
	ready.waitFor(t, true)
	h.waitApplied(30*time.Second, both...)
	if got := h.rowCache()["cdc:public.orders:1"]["status"]; got != "paid" {
		t.Errorf("order 1 cached with status %q after Redis came back, want paid", got)
	}

	// The inventory store down: only the inventory sink is affected.
	if err := h.pg.Stop(); err != nil {
		t.Fatal(err)
	}
	reason = ready.waitFor(t, false, "inventory sink: store unreachable: inventory store (Postgres)")
	if strings.Contains(reason, "redis sink") {
		t.Errorf("Postgres down makes the redis sink not ready: %q", reason)
	}
	t.Logf("Postgres down: %s", reason)
	if err := h.pg.Start(); err != nil {
		t.Fatal(err)
	}
	ready.waitFor(t, true)
	h.produce([]record{orderRecord(pipeline.OpUpdate, at(300, 290), 1, 3, 2, "shipped")})
	h.waitApplied(30*time.Second, both...)
	if it := h.items()[3]; it[1] != 0 || it[2] != 2 {
		t.Errorf("item 3: reserved %d shipped %d, want 0 2", it[1], it[2])
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	stopped = true
	if ok, reason := ready.get(); ok || reason != "stopped" {
		t.Errorf("after Run returned: (%v, %q), want not ready: stopped", ok, reason)
	}
	ready.mu.Lock()
	defer ready.mu.Unlock()
	if n := len(ready.history); n < 2 || ready.history[n-2] != "not ready: shutting down" {
		t.Errorf("shutdown not reported: %s", strings.Join(ready.history, "\n"))
	}
	for i := 1; i < len(ready.history); i++ {
		if ready.history[i] == ready.history[i-1] {
			t.Errorf("reported %q twice in a row", ready.history[i])
		}
	}
	fmt.Fprint(testWriter{t}, "history:\n"+strings.Join(ready.history, "\n"))
}

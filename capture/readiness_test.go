package capture

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// readinessLog records what capture reports for /readyz.
type readinessLog struct {
	mu     sync.Mutex
	ready  bool
	reason string
}

func (r *readinessLog) SetReady() {
	r.mu.Lock()
	r.ready, r.reason = true, ""
	r.mu.Unlock()
}
func (r *readinessLog) SetNotReady(reason string) {
	r.mu.Lock()
	r.ready, r.reason = false, reason
	r.mu.Unlock()
}
func (r *readinessLog) get() (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready, r.reason
}

// TestReadinessFollowsStreamingAndStalls: ready once streaming; not ready
// when Kafka stops acknowledging (the broker swallows produce requests).
func TestReadinessFollowsStreamingAndStalls(t *testing.T) {
	own := ownBroker(t, testenv.RequireEnv(t, env)) // the test breaks it
	kafka := own.Kafka
	db := env.PG.CreateDB(t)
	conn := connect(t, own, db)
	mustExec(t, conn, ordersDDL)
	cfg := testConfig(own, db)
	cfg.Snapshot = "never"
	// The stop at the end finds requests the broker never answers and
	// takes the whole timeout (TestShutdownWithinTimeoutWhileKafkaStalls).
	cfg.ShutdownTimeout = 2 * time.Second

	ready := &readinessLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, slog.New(slog.DiscardHandler), nil, WithReadiness(ready), WithStallTimeout(time.Second))
	}()
	var swallow atomic.Bool
	defer func() {
		swallow.Store(false) // let the final flush through
		cancel()
		<-done
	}()
	waitFor(t, 30*time.Second, "ready", func() bool { ok, _ := ready.get(); return ok })

	swallowProduce(kafka, &swallow)
	mustExec(t, conn, "INSERT INTO orders VALUES (1, 1, 1, 'created', NULL)")
	waitFor(t, 15*time.Second, "not ready while Kafka does not acknowledge", func() bool {
		ok, reason := ready.get()
		return !ok && strings.Contains(reason, "stalled")
	})
}

// swallowProduce makes the broker leave every produce request unanswered
// from now on, until swallow is cleared (requests held by then stay
// unanswered).
func swallowProduce(kafka *testenv.Kafka, swallow *atomic.Bool) {
	swallow.Store(true)
	cluster := kafka.Cluster()
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if !swallow.Load() {
			cluster.DropControl()
			return nil, nil, false
		}
		cluster.KeepControl()
		return nil, nil, true // no response: the producer waits
	})
}

// TestShutdownWithinTimeoutWhileKafkaStalls: a stop while the broker
// answers no produce request ends within CDCSYNC_SHUTDOWN_TIMEOUT, also
// exactly once, where the Kafka transaction's commit is waited for
// before the producer's flush. Before, the commit, a second commit behind
// it, the flush and the wait for unanswered requests each took up to half
// of the timeout.
func TestShutdownWithinTimeoutWhileKafkaStalls(t *testing.T) {
	own := ownBroker(t, testenv.RequireEnv(t, env)) // the test breaks it
	db := env.PG.CreateDB(t)
	conn := connect(t, own, db)
	mustExec(t, conn, ordersDDL)
	cfg := testConfig(own, db)
	cfg.Snapshot = "never"
	cfg.Delivery = deliveryExactlyOnce
	cfg.ShutdownTimeout = 4 * time.Second

	ready := &readinessLog{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, slog.New(slog.DiscardHandler), nil, WithReadiness(ready), WithStallTimeout(time.Second))
	}()
	waitFor(t, 30*time.Second, "ready", func() bool { ok, _ := ready.get(); return ok })
	var swallow atomic.Bool
	swallowProduce(own.Kafka, &swallow)
	mustExec(t, conn, "INSERT INTO orders VALUES (1, 1, 1, 'created', NULL)")
	waitFor(t, 15*time.Second, "stalled", func() bool {
		ok, reason := ready.get()
		return !ok && strings.Contains(reason, "stalled")
	})
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		took := time.Since(start)
		t.Logf("stopped after %v: %v", took.Round(time.Millisecond), err)
		// The timeout, and the final status to Postgres (up to 2 s, quick here).
		if limit := cfg.ShutdownTimeout + time.Second; took > limit {
			t.Fatalf("stop took %v with CDCSYNC_SHUTDOWN_TIMEOUT=%v (limit %v)", took.Round(time.Millisecond), cfg.ShutdownTimeout, limit)
		}
	case <-time.After(time.Minute):
		t.Fatal("capture did not stop within a minute")
	}
	swallow.Store(false)
}

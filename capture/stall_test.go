package capture

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestBrokerStallKeepsStatusAndReadinessHonest stalls the broker for
// longer than wal_sender_timeout while capture has more to produce than
// the producer's buffers take, but less than CDCSYNC_MAX_IN_FLIGHT: capture
// must keep answering the walsender (the session survives), report itself
// not ready while nothing is acknowledged, and afterwards deliver every row
// (issue 10 item 13).
func TestBrokerStallKeepsStatusAndReadinessHonest(t *testing.T) {
	testenv.RequireEnv(t, env)
	pg, err := testenv.StartPostgres(testenv.WithSetting("wal_sender_timeout", "2s"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Close)
	own := ownBroker(t, &testenv.Env{PG: pg}) // the test stalls it
	kafka := own.Kafka
	db := pg.CreateDB(t)
	conn := connect(t, own, db)
	mustExec(t, conn, ordersDDL)
	cfg := testConfig(own, db)
	cfg.Snapshot = "never"
	cfg.MaxInFlight = 200000       // the tracker never fills: the producer's buffers do
	cfg.MaxMessageBytes = 64 << 10 // small produce batches, so they fill with fewer rows
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")

	ready := &readinessLog{}
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)), reg, WithReadiness(ready), WithStallTimeout(time.Second))
	}()
	defer func() { cancel(); <-done }()
	waitSlotActive(t, conn, cfg.Slot)
	waitFor(t, 30*time.Second, "ready", func() bool { ok, _ := ready.get(); return ok })
	var walsender int
	if err := conn.QueryRow(ctx, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", cfg.Slot).Scan(&walsender); err != nil {
		t.Fatal(err)
	}

	// The first produce request after this stalls the whole broker for
	// 8 s (four times wal_sender_timeout).
	const stall = 8 * time.Second
	cluster := kafka.Cluster()
	stalled := make(chan struct{})
	var once sync.Once
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.DropControl()
		once.Do(func() { close(stalled) })
		time.Sleep(stall)
		return nil, nil, false
	})
	const rows = 30000
	mustExec(t, conn, "INSERT INTO orders SELECT g, g % 100, 1, 'created', repeat('n', 100) FROM generate_series(1, 30000) g")
	<-stalled
	stallEnd := time.Now().Add(stall)
	sawNotReady := false
	for time.Now().Before(stallEnd) {
		if ok, reason := ready.get(); !ok {
			sawNotReady = true
			t.Logf("not ready during the stall: %s", reason)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !sawNotReady {
		t.Errorf("/readyz said ready during the whole %v broker stall", stall)
	}

	waitFor(t, 60*time.Second, "every row on kafka", func() bool { return topicCount(t, kafka.Brokers(), topic) >= rows })
	waitFor(t, 15*time.Second, "ready again", func() bool { ok, _ := ready.get(); return ok })
	var after int
	if err := conn.QueryRow(ctx, "SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1", cfg.Slot).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after != walsender {
		t.Errorf("walsender changed from pid %d to %d: the session did not survive the stall (wal_sender_timeout)", walsender, after)
	}
	if n := counterTotal(t, reg, "cdcsync_capture_session_restarts_total"); n != 0 {
		t.Errorf("%v session restarts during the stall, want 0", n)
	}
	ids := map[string]bool{}
	for _, m := range readTopic(t, kafka.Brokers(), topic) {
		id, _ := m.Event.After.Get("id")
		ids[string(id)] = true
	}
	if len(ids) != rows {
		t.Fatalf("%d distinct rows on the topic, want %d", len(ids), rows)
	}
}

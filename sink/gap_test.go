package sink

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
)

// runWithReadiness runs the sinks of cfg until the test ends, reporting
// readiness to the returned log.
func (h *harness) runWithReadiness(cfg config.Sink) *readinessLog {
	h.t.Helper()
	ready := &readinessLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	go func() { done <- Run(ctx, cfg, logger, prometheus.NewRegistry(), WithReadiness(ready)) }()
	h.t.Cleanup(func() {
		cancel()
		<-done
	})
	return ready
}

// TestSinkRefusesToSkipDeletedRecords deletes the oldest records of every
// partition (as retention would) while the sink is stopped, including
// records it had not applied yet. Restarted, the sink must not skip them:
// it stops those partitions, reports which range was lost and how to
// rebuild, and commits nothing past the gap. A new group on the same
// topic (cleanup.policy=delete, log start past 0) is refused the same way.
func TestSinkRefusesToSkipDeletedRecords(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 20, onHand: 50})
	cfg := h.config(config.SinkInventory)
	cfg.AvailabilityCache = "off"
	group := h.groups(config.SinkInventory)[0]
	w := newWorkload(51, 20)
	s := h.start(cfg)
	h.produce(w.generate(50, 200))
	h.waitApplied(60*time.Second, group)
	s.stop(t)
	before := h.committed(group)

	var more []record
	for range 200 {
		more = append(more, w.txn()...)
	}
	h.produce(more)
	admin, err := sarama.NewClusterAdmin(h.kafka.Brokers(), testenv.SaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	client, err := sarama.NewClient(h.kafka.Brokers(), testenv.SaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for p := int32(0); p < 4; p++ {
		end, err := client.GetOffset(h.topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		if err := admin.DeleteRecords(h.topic, map[int32]int64{p: end - 5}); err != nil {
			t.Fatalf("delete records of partition %d: %v", p, err)
		}
	}

	ready := h.runWithReadiness(cfg)
	reason := ready.waitFor(t, false, "partition stopped", h.topic+"/", "were deleted from the topic before consumer group "+group, "replay snapshot")
	t.Logf("not ready: %s", reason)
	// Give the sink time to (wrongly) apply and commit what is left.
	time.Sleep(3 * time.Second)
	if after := h.committed(group); after != before {
		t.Errorf("committed offsets moved from %d to %d past records the sink never applied", before, after)
	}

	// A replay from the beginning would build from what is left: refused.
	if _, err := Replay(context.Background(), cfg, config.SinkInventory, Beginning(), End(), nil, nil); !errors.Is(err, ErrHistoryDeleted) {
		t.Errorf("replay --from beginning after records were deleted: %v, want ErrHistoryDeleted", err)
	}

	// A new group: the topic deletes old records, and they are gone.
	fresh := cfg
	fresh.GroupPrefix = h.prefix + "-new"
	fresh.InventoryURL = h.pg.URL(h.pg.CreateDB(t))
	ready = h.runWithReadiness(fresh)
	reason = ready.waitFor(t, false, "partition stopped", "no committed offset", `cleanup.policy is "delete"`)
	t.Logf("new group, not ready: %s", reason)
}

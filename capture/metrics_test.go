package capture

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestMetricsCountWhatReachedKafka checks the capture series an operator
// alerts on against what is really on the topic and in the slot.
func TestMetricsCountWhatReachedKafka(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, ordersDDL)
	cfg := testConfig(e, db)
	cfg.Snapshot = "never"
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.DiscardHandler), reg) }()
	defer func() { cancel(); <-done }()
	waitSlotActive(t, conn, cfg.Slot)
	mustExec(t, conn, "INSERT INTO orders SELECT g, 1, 1, 'created', NULL FROM generate_series(1, 100) g", "DELETE FROM orders WHERE id <= 10")
	// 100 inserts + 10 deletes + 10 tombstones
	waitFor(t, 30*time.Second, "records", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 120 })
	waitFor(t, 10*time.Second, "acknowledged counter", func() bool {
		return counterValue(t, reg, "cdcsync_capture_events_acknowledged_total", topic) == 120
	})
	if got := counterValue(t, reg, "cdcsync_capture_events_captured_total", "public.orders"); got != 110 {
		t.Errorf("captured = %v, want 110 changes", got)
	}
	if got := counterValue(t, reg, "cdcsync_capture_events_produced_total", topic); got != 120 {
		t.Errorf("produced = %v, want 120 messages", got)
	}
	waitFor(t, 10*time.Second, "confirmed LSN gauge", func() bool {
		return gaugeValue(t, reg, "cdcsync_capture_confirmed_lsn") > 0
	})
	if n := histogramCount(t, reg, "cdcsync_capture_produce_seconds"); n != 120 {
		t.Errorf("produce latency observations = %d, want 120", n)
	}
}

// counterValue returns the counter name{label} or -1 when absent.
func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

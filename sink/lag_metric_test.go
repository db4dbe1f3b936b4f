package sink

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/config"
)

// cdcsync_sink_consumer_lag_messages says how far behind a partition the
// sink is: above zero while a backlog is applied in small batches, zero
// for every partition once everything is applied.
func TestConsumerLagMetric(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 100, onHand: 1000})
	w := newWorkload(seed(t), 100)
	h.produce(w.generate(0, 3000)) // a backlog before the sink starts
	cfg := h.config(config.SinkInventory)
	cfg.BatchSize = 50
	s := h.start(cfg)

	sawLag := false
	deadline := time.Now().Add(60 * time.Second)
	for !sawLag && time.Now().Before(deadline) {
		for _, v := range lagGauges(t, s.reg, h.topic) {
			sawLag = sawLag || v > 0
		}
		time.Sleep(2 * time.Millisecond)
	}
	if !sawLag {
		t.Error("consumer lag never above 0 while a 3,000-message backlog was applied 50 at a time")
	}
	h.waitApplied(60*time.Second, h.groups(config.SinkInventory)...)
	// Offsets are committed after the gauge is set, so it is final now.
	lags := lagGauges(t, s.reg, h.topic)
	if len(lags) != 4 {
		t.Errorf("lag reported for partitions %v, want all 4", lags)
	}
	for p, v := range lags {
		if v != 0 {
			t.Errorf("partition %s: lag %v after everything was applied", p, v)
		}
	}
}

// lagGauges returns the consumer lag gauge of topic by partition.
func lagGauges(t testing.TB, reg *prometheus.Registry, topic string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "cdcsync_sink_consumer_lag_messages" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["topic"] == topic && labels["sink"] == config.SinkInventory {
				out[labels["partition"]] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

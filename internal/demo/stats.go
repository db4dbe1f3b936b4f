package demo

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/status"
)

// sample is the pipeline's counters at one moment.
type sample struct {
	at      time.Time
	writes  int64 // order transactions committed by the generator
	creates int64 // OrderCreated events published
	// events is the number of OrderCreated records on Kafka.
	events   int64
	captured int64 // row changes capture decoded
	slotLag  int64 // bytes
	sinks    map[string]sinkSample
}

type sinkSample struct {
	// processed counts consumed change events: applied, skipped (stale,
	// superseded within a batch) and dead-lettered. Tombstones (the null
	// record after a delete, for compaction) are left out, so that it
	// compares with capture's count of row changes.
	processed int64
	lag       int64 // records not yet applied
	// e2eSum and e2eCount are the end-to-end latency histogram's sum
	// (seconds) and count.
	e2eSum   float64
	e2eCount uint64
}

// sampler reads the counters: the generator's, capture's and the sinks'
// Prometheus series from the registry they were given, and the slot and
// consumer lag from the status collector.
type sampler struct {
	gen    *generator
	reg    prometheus.Gatherer
	col    *status.Collector
	events *eventCounter
}

func (s *sampler) take(ctx context.Context) (sample, error) {
	out := sample{at: time.Now(), writes: s.gen.writes.Load(), creates: s.gen.creates.Load(), sinks: map[string]sinkSample{}}
	families, err := s.reg.Gather()
	if err != nil {
		return out, err
	}
	r, err := s.col.Collect(ctx)
	if err != nil {
		return out, err
	}
	out.slotLag = r.Slot.LagBytes
	if out.events, err = s.events.count(); err != nil {
		return out, err
	}
	out.captured = int64(sum(families, "cdcsync_capture_events_captured_total", nil))
	for _, sk := range r.Sinks {
		label := map[string]string{"sink": sk.Name}
		ss := sinkSample{lag: sk.Lag}
		tombstones := map[string]string{"sink": sk.Name, "reason": "tombstone"}
		ss.processed = int64(sum(families, "cdcsync_sink_events_applied_total", label) +
			sum(families, "cdcsync_sink_events_skipped_total", label) -
			sum(families, "cdcsync_sink_events_skipped_total", tombstones) +
			sum(families, "cdcsync_sink_events_dead_lettered_total", label))
		ss.e2eSum, ss.e2eCount = histogram(families, "cdcsync_sink_end_to_end_seconds", label)
		out.sinks[sk.Name] = ss
	}
	return out, nil
}

// sinks are the sinks the demo runs, in display order.
var sinks = []string{config.SinkInventory, config.SinkRedis}

// sum adds the values of the counters or gauges named name whose labels
// include want.
func sum(families []*dto.MetricFamily, name string, want map[string]string) float64 {
	var total float64
	for _, m := range metrics(families, name, want) {
		switch {
		case m.GetCounter() != nil:
			total += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			total += m.GetGauge().GetValue()
		}
	}
	return total
}

// histogram adds up the sums and counts of the histograms named name
// whose labels include want.
func histogram(families []*dto.MetricFamily, name string, want map[string]string) (float64, uint64) {
	var s float64
	var n uint64
	for _, m := range metrics(families, name, want) {
		if h := m.GetHistogram(); h != nil {
			s += h.GetSampleSum()
			n += h.GetSampleCount()
		}
	}
	return s, n
}

func metrics(families []*dto.MetricFamily, name string, want map[string]string) []*dto.Metric {
	var out []*dto.Metric
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if hasLabels(m, want) {
				out = append(out, m)
			}
		}
	}
	return out
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// rates are the per-second rates between two samples.
type rates struct {
	writes, events, captured float64
	sinks                    map[string]float64
	// e2e is the sinks' mean end-to-end latency over the interval; zero
	// when nothing was applied.
	e2e map[string]time.Duration
}

func rateBetween(prev, cur sample) rates {
	r := rates{sinks: map[string]float64{}, e2e: map[string]time.Duration{}}
	secs := cur.at.Sub(prev.at).Seconds()
	if secs <= 0 {
		return r
	}
	per := func(a, b int64) float64 { return float64(max(b-a, 0)) / secs }
	r.writes = per(prev.writes, cur.writes)
	r.events = per(prev.events, cur.events)
	r.captured = per(prev.captured, cur.captured)
	for name, c := range cur.sinks {
		p := prev.sinks[name]
		r.sinks[name] = per(p.processed, c.processed)
		if n := c.e2eCount - min(p.e2eCount, c.e2eCount); n > 0 {
			r.e2e[name] = time.Duration((c.e2eSum - p.e2eSum) / float64(n) * float64(time.Second))
		}
	}
	return r
}

package sink

import (
	"math"
	"sort"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
)

// Run with a fixed event count, e.g.
//
//	go test -run '^$' -bench Sink -benchtime 200000x ./sink/
//
// Each op is one message of the change topic (tombstones included). The
// rate excludes the consumer group's start-up: it is measured from the
// first commit to the last.
func BenchmarkInventorySink(b *testing.B) { benchmarkSink(b, config.SinkInventory) }

func BenchmarkRedisSink(b *testing.B) { benchmarkSink(b, config.SinkRedis) }

func benchmarkSink(b *testing.B, sink string) {
	h := newHarness(b, harnessOptions{items: 1000, onHand: 1 << 40})
	w := newWorkload(1, 1000)
	w.truncates = false
	recs := w.snapshot(min(b.N, 1000))
	for len(recs) < b.N {
		recs = append(recs, w.txn()...)
	}
	h.produce(recs)
	total := h.endOffsets()
	group := h.prefix + "-" + sink

	b.ResetTimer()
	s := h.start(h.config(sink))
	var (
		t0 time.Time
		c0 int64
	)
	for {
		c := h.committed(group)
		if c > 0 && t0.IsZero() {
			t0, c0 = time.Now(), c
		}
		if c >= total {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(t0)
	b.StopTimer()
	s.stop(b)
	if total > c0 && elapsed > 0 {
		b.ReportMetric(float64(total-c0)/elapsed.Seconds(), "events/s")
	}
}

// BenchmarkInventoryLatency streams about 2,000 source transactions (orders
// changed) per second for ten seconds into the inventory sink and reports
// the end-to-end latency from the event's source.ts_ms (set when the test
// produces it, so capture's share is not included) to applied.
func BenchmarkInventoryLatency(b *testing.B) {
	h := newHarness(b, harnessOptions{items: 1000, onHand: 1 << 40})
	w := newWorkload(2, 1000)
	s := h.start(h.config(config.SinkInventory))
	h.produce(w.snapshot(100))
	h.waitApplied(30*time.Second, h.groups(config.SinkInventory)...)
	b.ResetTimer()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(10 * time.Second)
	txns := 0
	for time.Now().Before(end) {
		<-tick.C
		var recs []record
		for range 20 {
			recs = append(recs, w.txn()...)
		}
		txns += 20
		h.produce(recs)
	}
	h.waitApplied(60*time.Second, h.groups(config.SinkInventory)...)
	b.StopTimer()
	b.ReportMetric(float64(txns)/10, "txns/s")
	b.ReportMetric(quantile(b, s.reg, "cdcsync_sink_end_to_end_seconds", 0.50)*1000, "p50-ms")
	b.ReportMetric(quantile(b, s.reg, "cdcsync_sink_end_to_end_seconds", 0.99)*1000, "p99-ms")
	b.ReportMetric(quantile(b, s.reg, "cdcsync_sink_apply_seconds", 0.50)*1000, "apply-p50-ms")
	b.ReportMetric(quantile(b, s.reg, "cdcsync_sink_apply_seconds", 0.99)*1000, "apply-p99-ms")
	b.ReportMetric(quantile(b, s.reg, "cdcsync_sink_batch_messages", 0.5), "batch-p50")
}

// quantile estimates a quantile of a histogram by linear interpolation
// inside its bucket.
func quantile(tb testing.TB, reg *prometheus.Registry, name string, q float64) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		hist := mf.GetMetric()[0].GetHistogram()
		buckets := hist.GetBucket()
		sort.Slice(buckets, func(i, j int) bool { return buckets[i].GetUpperBound() < buckets[j].GetUpperBound() })
		rank := q * float64(hist.GetSampleCount())
		var prevCount, prevBound float64
		for _, bk := range buckets {
			c := float64(bk.GetCumulativeCount())
			if c >= rank {
				if c == prevCount {
					return bk.GetUpperBound()
				}
				return prevBound + (bk.GetUpperBound()-prevBound)*(rank-prevCount)/(c-prevCount)
			}
			prevCount, prevBound = c, bk.GetUpperBound()
		}
		return math.Inf(1)
	}
	tb.Fatalf("no histogram %s", name)
	return 0
}

// endOffsets sums the end offsets of the harness topic's partitions.
func (h *harness) endOffsets() int64 {
	h.t.Helper()
	client, err := sarama.NewClient(h.kafka.Brokers(), testenv.SaramaConfig())
	if err != nil {
		h.t.Fatal(err)
	}
	defer client.Close()
	parts, err := client.Partitions(h.topic)
	if err != nil {
		h.t.Fatal(err)
	}
	var sum int64
	for _, p := range parts {
		off, err := client.GetOffset(h.topic, p, sarama.OffsetNewest)
		if err != nil {
			h.t.Fatal(err)
		}
		sum += off
	}
	return sum
}

// committed sums a group's committed offsets on the harness topic.
func (h *harness) committed(group string) int64 {
	h.t.Helper()
	admin, err := sarama.NewClusterAdmin(h.kafka.Brokers(), testenv.SaramaConfig())
	if err != nil {
		h.t.Fatal(err)
	}
	defer admin.Close()
	resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{h.topic: {0, 1, 2, 3}})
	if err != nil {
		return 0
	}
	var sum int64
	for p := int32(0); p < 4; p++ {
		if b := resp.GetBlock(h.topic, p); b != nil && b.Offset > 0 {
			sum += b.Offset
		}
	}
	return sum
}

// BenchmarkDecodeMessage measures decoding one change message (envelope
// and key), the sinks' main CPU cost per event.
func BenchmarkDecodeMessage(b *testing.B) {
	w := newWorkload(3, 1000)
	var recs []record
	for len(recs) < 1000 {
		for _, r := range w.txn() {
			if r.value != nil {
				recs = append(recs, r)
			}
		}
	}
	raws := make([]*sarama.ConsumerMessage, len(recs))
	for i, r := range recs {
		raws[i] = &sarama.ConsumerMessage{Key: r.key, Value: r.value}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if m := decodeMessage(raws[i%len(raws)]); m.Err != nil {
			b.Fatal(m.Err)
		}
	}
}

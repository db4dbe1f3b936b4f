package sink

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons an event is skipped (the skipped counter's reason label).
const (
	skipStale      = "stale"      // at or before the position the store holds for its key
	skipTruncated  = "truncated"  // at or before a later-applied truncate of its table
	skipSuperseded = "superseded" // a later event for the same key in the same batch replaces it
	skipTombstone  = "tombstone"  // the null value after a delete, for compaction only
)

// metrics are the sinks' Prometheus collectors, labelled by sink.
type metrics struct {
	applied      *prometheus.CounterVec
	skipped      *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	retries      *prometheus.CounterVec
	batchSize    *prometheus.HistogramVec
	applySeconds *prometheus.HistogramVec
	endToEnd     *prometheus.HistogramVec
	consumerLag  *prometheus.GaugeVec
	stopped      *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cdcsync", Subsystem: "sink", Name: "events_applied_total",
			Help: "Change events whose effect was written to the sink.",
		}, []string{"sink"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cdcsync", Subsystem: "sink", Name: "events_skipped_total",
			Help: "Change events that changed nothing: stale (duplicate or older than the stored version), truncated, superseded within a batch, or tombstones.",
		}, []string{"sink", "reason"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cdcsync", Subsystem: "sink", Name: "events_dead_lettered_total",
			Help: "Messages that could never be applied and were written to the dead-letter topic.",
		}, []string{"sink"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "cdcsync", Subsystem: "sink", Name: "retries_total",
			Help: "Failed attempts that were retried, by stage (apply or dlq).",
		}, []string{"sink", "stage"}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "cdcsync", Subsystem: "sink", Name: "batch_messages",
			Help:    "Messages per applied batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8),
		}, []string{"sink"}),
		applySeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "cdcsync", Subsystem: "sink", Name: "apply_seconds",
			Help:    "Time to apply one batch durably, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"sink"}),
		endToEnd: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "cdcsync", Subsystem: "sink", Name: "end_to_end_seconds",
			Help:    "From the commit in the source database (source.ts_ms) to applied in the sink; snapshot rows excluded.",
			Buckets: prometheus.ExponentialBuckets(0.001, 1.5, 30),
		}, []string{"sink"}),
		consumerLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "cdcsync", Subsystem: "sink", Name: "consumer_lag_messages",
			Help: "Messages on the partition after the last applied batch (high-water mark minus the next offset), per partition this process consumes.",
		}, []string{"sink", "topic", "partition"}),
		stopped: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "cdcsync", Subsystem: "sink", Name: "partitions_stopped",
			Help: "Partitions this process does not consume because records were deleted from the topic before the sink applied them (see the logs for the range and how to rebuild).",
		}, []string{"sink"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	reg1 := func(c *prometheus.CounterVec) *prometheus.CounterVec {
		c, e := register(reg, c)
		err = errors.Join(err, e)
		return c
	}
	reg2 := func(h *prometheus.HistogramVec) *prometheus.HistogramVec {
		h, e := register(reg, h)
		err = errors.Join(err, e)
		return h
	}
	m.applied, m.skipped, m.deadLettered, m.retries = reg1(m.applied), reg1(m.skipped), reg1(m.deadLettered), reg1(m.retries)
	m.batchSize, m.applySeconds, m.endToEnd = reg2(m.batchSize), reg2(m.applySeconds), reg2(m.endToEnd)
	var lagErr error
	m.consumerLag, lagErr = register(reg, m.consumerLag)
	err = errors.Join(err, lagErr)
	m.stopped, lagErr = register(reg, m.stopped)
	err = errors.Join(err, lagErr)
	if err != nil {
		return nil, fmt.Errorf("register sink metrics: %w", err)
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// its name: Run may be called again with the same registry (tests, an
// in-process restart) and should keep counting on the same series.
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			return existing, nil
		}
	}
	return c, err
}

// sinkMetrics are the collectors of one sink, with the label applied.
type sinkMetrics struct {
	applied      prometheus.Counter
	skipped      map[string]prometheus.Counter
	deadLettered prometheus.Counter
	applyRetries prometheus.Counter
	dlqRetries   prometheus.Counter
	batchSize    prometheus.Observer
	applySeconds prometheus.Observer
	endToEnd     prometheus.Observer
	// lag is the consumer lag gauge of this sink's partitions.
	lag *prometheus.GaugeVec
	// partitionsStopped counts partitions stopped by a gap (gap.go).
	partitionsStopped prometheus.Gauge
	sink              string
}

// setLag sets the consumer lag of a partition after a batch.
func (s *sinkMetrics) setLag(topic string, partition int32, lag int64) {
	s.lag.WithLabelValues(s.sink, topic, strconv.Itoa(int(partition))).Set(float64(max(lag, 0)))
}

// dropLag removes a partition's lag when this process stops consuming it,
// so that the member that takes it over is the only one reporting it.
func (s *sinkMetrics) dropLag(topic string, partition int32) {
	s.lag.DeleteLabelValues(s.sink, topic, strconv.Itoa(int(partition)))
}

func (m *metrics) forSink(sink string) *sinkMetrics {
	s := &sinkMetrics{
		applied:           m.applied.WithLabelValues(sink),
		skipped:           map[string]prometheus.Counter{},
		deadLettered:      m.deadLettered.WithLabelValues(sink),
		applyRetries:      m.retries.WithLabelValues(sink, "apply"),
		dlqRetries:        m.retries.WithLabelValues(sink, "dlq"),
		batchSize:         m.batchSize.WithLabelValues(sink),
		applySeconds:      m.applySeconds.WithLabelValues(sink),
		endToEnd:          m.endToEnd.WithLabelValues(sink),
		lag:               m.consumerLag,
		sink:              sink,
		partitionsStopped: m.stopped.WithLabelValues(sink),
	}
	for _, r := range []string{skipStale, skipTruncated, skipSuperseded, skipTombstone} {
		s.skipped[r] = m.skipped.WithLabelValues(sink, r)
	}
	return s
}

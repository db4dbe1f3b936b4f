package sink

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/pipeline"
)

// partitionMark is the newest watermark of a batch: the batch's partition
// is complete through Watermark.LSN once the batch is applied.
type partitionMark struct {
	Topic     string
	Partition int32
	pipeline.Watermark
}

// Applied is a store's applied-through position: every change committed
// at or before LSN in source epoch Epoch (and every change of an older
// epoch) is visible in it. AsOf is when the source was at LSN (zero when
// unknown); the store is at most time.Since(AsOf) behind.
type Applied struct {
	pipeline.EpochLSN
	AsOf time.Time
}

// known reports whether a holds a position (a store that has applied
// nothing yet has none).
func (a Applied) known() bool { return !a.IsZero() }

// throughApplier is an Applier that keeps the applied-through position of
// its store with the data: ApplyThrough applies batch (which may be empty)
// and, in the same transaction or after the data in the same pipeline,
// records that mark's partition is complete through mark.LSN. It returns
// the store's applied-through position afterwards (zero LSN while some
// partition of a followed topic has no watermark yet).
type throughApplier interface {
	Applier
	ApplyThrough(ctx context.Context, batch []*Message, mark *partitionMark) (Applied, error)
}

// SinkApplied is one sink's applied-through position as the process last
// saw it.
type SinkApplied struct {
	Sink string
	Applied
}

// AppliedPositions holds the applied-through positions of the sinks of one
// process, as their batches report them, for /applied, waits and metrics.
// Positions only move forward. The zero value is not usable: call
// NewAppliedPositions.
type AppliedPositions struct {
	mu      sync.Mutex
	sinks   map[string]Applied
	changed chan struct{} // closed and replaced on every change
}

// NewAppliedPositions returns an empty set of positions.
func NewAppliedPositions() *AppliedPositions {
	return &AppliedPositions{sinks: map[string]Applied{}, changed: make(chan struct{})}
}

// WithAppliedPositions makes Run report each sink's applied-through
// position to p (for the /applied endpoint). Without it Run keeps its own.
func WithAppliedPositions(p *AppliedPositions) Option {
	return func(o *options) { o.applied = p }
}

// register adds sink with no position yet: until it reports one, waits
// for any LSN block.
func (p *AppliedPositions) register(sink string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.sinks[sink]; !ok {
		p.sinks[sink] = Applied{}
	}
}

// update moves sink's position forward to a (never back).
func (p *AppliedPositions) update(sink string, a Applied) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.sinks[sink]
	if a.Less(cur.EpochLSN) || (a.EpochLSN == cur.EpochLSN && !a.AsOf.After(cur.AsOf)) {
		return
	}
	p.sinks[sink] = a
	close(p.changed)
	p.changed = make(chan struct{})
}

// Snapshot returns every sink's position, sorted by sink.
func (p *AppliedPositions) Snapshot() []SinkApplied {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]SinkApplied, 0, len(p.sinks))
	for s, a := range p.sinks {
		out = append(out, SinkApplied{Sink: s, Applied: a})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Sink < out[j].Sink })
	return out
}

// reached reports whether every sink has applied pos, and the channel that
// is closed at the next change. A position of an older source epoch is
// not there yet whatever its LSN: after a failover the new primary's LSNs
// may be below the old one's.
func (p *AppliedPositions) reached(pos pipeline.EpochLSN) (bool, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ok := len(p.sinks) > 0
	for _, a := range p.sinks {
		if a.Less(pos) {
			ok = false
		}
	}
	return ok, p.changed
}

// Wait blocks until every sink of the process has applied pos, or ctx
// ends (its error is returned).
func (p *AppliedPositions) Wait(ctx context.Context, pos pipeline.EpochLSN) error {
	for {
		ok, changed := p.reached(pos)
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

var (
	appliedLSNDesc = prometheus.NewDesc("cdcsync_sink_applied_lsn",
		"Applied-through position of the sink's store: every change committed at or before this LSN (as a number) is visible in it.",
		[]string{"sink"}, nil)
	appliedEpochDesc = prometheus.NewDesc("cdcsync_sink_applied_epoch",
		"Source epoch of the applied-through position (0 until a lost slot was created again): after a failover the new epoch's LSNs may be below the old one's.",
		[]string{"sink"}, nil)
	freshnessDesc = prometheus.NewDesc("cdcsync_sink_freshness_seconds",
		"How far the sink's store is behind the source, in time: now minus when the source was at the applied-through position.",
		[]string{"sink"}, nil)
)

// Describe implements prometheus.Collector.
func (p *AppliedPositions) Describe(ch chan<- *prometheus.Desc) {
	ch <- appliedLSNDesc
	ch <- appliedEpochDesc
	ch <- freshnessDesc
}

// Collect implements prometheus.Collector: freshness is computed at
// scrape time, so it grows while a sink is stuck.
func (p *AppliedPositions) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, s := range p.Snapshot() {
		if !s.known() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(appliedLSNDesc, prometheus.GaugeValue, float64(s.LSN), s.Sink)
		ch <- prometheus.MustNewConstMetric(appliedEpochDesc, prometheus.GaugeValue, float64(s.Epoch), s.Sink)
		if !s.AsOf.IsZero() {
			ch <- prometheus.MustNewConstMetric(freshnessDesc, prometheus.GaugeValue, max(0, now.Sub(s.AsOf).Seconds()), s.Sink)
		}
	}
}

// lowest returns the lower of two applied positions (the inventory sink's
// Postgres store and its availability cache).
func lowest(a, b Applied) Applied {
	if b.Less(a.EpochLSN) {
		return b
	}
	return a
}

// watermark returns the newest valid watermark of a batch (all from one
// partition), or nil.
func (c *consumer) watermark(raws []*sarama.ConsumerMessage) *partitionMark {
	var mark *partitionMark
	for _, raw := range raws {
		if raw.Value != nil {
			continue
		}
		wm, ok, err := pipeline.ParseWatermark(raw.Headers)
		if err != nil {
			c.log.Warn("malformed watermark ignored", "topic", raw.Topic, "partition", raw.Partition, "offset", raw.Offset, "err", err)
			continue
		}
		if ok && (mark == nil || mark.EpochLSN().Less(wm.EpochLSN())) {
			mark = &partitionMark{Topic: raw.Topic, Partition: raw.Partition, Watermark: wm}
		}
	}
	return mark
}

// apply applies a batch, with its watermark when the store keeps an
// applied-through position, and reports the position.
func (c *consumer) apply(ctx context.Context, batch []*Message, mark *partitionMark) error {
	ta, ok := c.applier.(throughApplier)
	if !ok || mark == nil {
		if len(batch) == 0 {
			return nil
		}
		return c.applier.Apply(ctx, batch)
	}
	a, err := ta.ApplyThrough(ctx, batch, mark)
	if err != nil {
		return err
	}
	if c.positions != nil && a.known() {
		c.positions.update(c.sink, a)
	}
	return nil
}

// followInterval is how often a sink daemon reads its stores'
// applied-through positions: at start, and for a process whose batches do
// not report them (one left without partitions, or whose partitions are
// quiet while another process's batches move the shared position).
const followInterval = time.Second

// follow reads a sink's applied-through position from its store every
// followInterval until ctx ends.
func (p *AppliedPositions) follow(ctx context.Context, sink string, read func(context.Context) (Applied, error), log *slog.Logger) {
	t := time.NewTicker(followInterval)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, probeTimeout)
		a, err := read(rctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Debug("read applied position", "sink", sink, "err", err)
		case a.known():
			p.update(sink, a)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

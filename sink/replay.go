package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/kafkaclient"
)

// ErrUnknownSink is returned (wrapped) by Replay for a sink name other than
// config.SinkInventory and config.SinkRedis.
var ErrUnknownSink = errors.New("unknown sink")

// ErrNoTopic is returned (wrapped) by Replay when a topic of the sink does
// not exist.
var ErrNoTopic = errors.New("topic does not exist")

// Bound is one end of a replay range, resolved to an offset in each
// partition: the beginning (oldest offset kept), the end (the end offset
// when the replay starts), an offset, or a time (the first record whose
// Kafka timestamp, the time capture produced it, is at or after it).
// Ranges are half-open: a replay from A to B applies the records at
// offsets A up to, not including, B. The zero Bound is not valid.
type Bound struct {
	kind   boundKind
	offset int64
	at     time.Time
}

type boundKind int

const (
	boundBeginning boundKind = iota + 1
	boundEnd
	boundOffset
	boundTime
)

// Beginning is the oldest offset each partition still keeps.
func Beginning() Bound { return Bound{kind: boundBeginning} }

// End is each partition's end offset when the replay starts: a replay
// never waits for records written after it started.
func End() Bound { return Bound{kind: boundEnd} }

// AtOffset is the same offset in every partition, clamped to what the
// partition holds.
func AtOffset(offset int64) Bound { return Bound{kind: boundOffset, offset: offset} }

// AtTime is, in each partition, the first record with a timestamp at or
// after t (the end when there is none).
func AtTime(t time.Time) Bound { return Bound{kind: boundTime, at: t} }

// ParseBound reads "beginning", "end", an offset (a non-negative integer)
// or an RFC 3339 time such as 2024-05-01T12:00:00Z.
func ParseBound(s string) (Bound, error) {
	switch s {
	case "beginning":
		return Beginning(), nil
	case "end":
		return End(), nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return Bound{}, fmt.Errorf("offset %d is negative", n)
		}
		return AtOffset(n), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return AtTime(t), nil
	}
	return Bound{}, fmt.Errorf("%q is not beginning, end, an offset or an RFC 3339 time such as 2024-05-01T12:00:00Z", s)
}

// String is the form ParseBound reads.
func (b Bound) String() string {
	switch b.kind {
	case boundBeginning:
		return "beginning"
	case boundEnd:
		return "end"
	case boundOffset:
		return strconv.FormatInt(b.offset, 10)
	case boundTime:
		return b.at.Format(time.RFC3339Nano)
	}
	return "(unset)"
}

// EmptyRange reports whether from..to is empty in every partition,
// whatever it holds: from is the end, to the beginning, or both are
// offsets or both times and to is not after from. Callers refuse such
// arguments; Replay just has nothing to do.
func EmptyRange(from, to Bound) bool {
	switch {
	case from.kind == boundEnd || to.kind == boundBeginning:
		return true
	case from.kind == boundOffset && to.kind == boundOffset:
		return to.offset <= from.offset
	case from.kind == boundTime && to.kind == boundTime:
		return !to.at.After(from.at)
	}
	return false
}

// offsetIn resolves b in one partition that holds offsets [oldest, newest).
func (b Bound) offsetIn(client sarama.Client, topic string, partition int32, oldest, newest int64) (int64, error) {
	clamp := func(o int64) int64 { return min(max(o, oldest), newest) }
	switch b.kind {
	case boundBeginning:
		return oldest, nil
	case boundEnd:
		return newest, nil
	case boundOffset:
		return clamp(b.offset), nil
	case boundTime:
		o, err := client.GetOffset(topic, partition, b.at.UnixMilli())
		if err != nil {
			return 0, fmt.Errorf("find the offset of %s in %s/%d: %w", b, topic, partition, err)
		}
		if o < 0 { // no record at or after the time
			return newest, nil
		}
		return clamp(o), nil
	}
	return 0, errors.New("replay bound not set")
}

// ReplayPartition is the range of one partition a replay applies: offsets
// From up to, not including, To.
type ReplayPartition struct {
	Topic     string
	Partition int32
	From, To  int64
}

// ReplayStats is what a replay did.
type ReplayStats struct {
	Sink       string
	Partitions []ReplayPartition
	// Messages counts the change records read (watermarks aside); each is one of Applied (changed
	// the store), Skipped (changed nothing: already applied, older than
	// what the store holds, superseded within its batch), DeadLettered
	// (written to a dead-letter topic, as the daemon would),
	// AlreadyDeadLettered (unappliable, and its dead letter from this sink
	// is in the dead-letter topic already: not written again) or
	// Tombstones.
	Messages, Applied, Skipped, DeadLettered, AlreadyDeadLettered, Tombstones int64
	// DeadLetterTopics are the topics dead letters were written to.
	DeadLetterTopics []string
}

// Total is the number of offsets in the replayed ranges.
func (s ReplayStats) Total() int64 {
	var n int64
	for _, p := range s.Partitions {
		n += max(p.To-p.From, 0)
	}
	return n
}

// Replay re-applies the records of the sink's topics between from and to
// to the sink's store, through the same Applier, batching and dead-letter
// handling as the daemon. Applying is idempotent by position, so records
// the store already holds change nothing and a replay of everything
// rebuilds a store that was emptied (a flushed Redis, say).
//
// It reads the partitions directly, without a consumer group, and commits
// no offsets: the daemon's group and its committed offsets are left alone,
// and both may run at the same time (the position checks order their
// writes). progress, if not nil, is called with the offsets done and the
// total after every batch, from one goroutine at a time.
//
// Outages of the store met while applying are retried until ctx ends, like
// the daemon does; a store or broker that cannot be reached at the start
// is an error. When ctx ends first, the stats so far are returned with
// ctx's error.
func Replay(ctx context.Context, cfg config.Sink, sinkName string, from, to Bound, logger *slog.Logger, progress func(done, total int64)) (ReplayStats, error) {
	stats := ReplayStats{Sink: sinkName}
	if sinkName != config.SinkInventory && sinkName != config.SinkRedis {
		return stats, fmt.Errorf("%w %q: the sinks are %s and %s", ErrUnknownSink, sinkName, config.SinkInventory, config.SinkRedis)
	}
	if from.kind == 0 || to.kind == 0 {
		return stats, errors.New("replay: from and to must be set")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if progress == nil {
		progress = func(int64, int64) {}
	}
	cfg.Sinks = []string{sinkName}
	if err := cfg.Validate(); err != nil {
		return stats, err
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = defaultShutdownTimeout
	}
	log := logger.With("sink", sinkName, "replay", true)
	st, err := openStores(ctx, cfg, log)
	if err != nil {
		return stats, err
	}
	defer st.close()
	s := st.list[0]

	sc, err := kafkaclient.Config(cfg.Kafka)
	if err != nil {
		return stats, err
	}
	sc.Consumer.Return.Errors = true
	sc.Consumer.Fetch.Default = 4 << 20
	sc.ChannelBufferSize = min(max(cfg.BatchSize, 256), 8192)
	sc.Metadata.AllowAutoTopicCreation = false
	client, err := kafkaclient.NewClient(cfg.Kafka, sc)
	if err != nil {
		return stats, err
	}
	defer client.Close()

	stats.Partitions, err = resolveRanges(client, s.topics, from, to)
	if err != nil {
		return stats, err
	}
	if from.kind == boundBeginning {
		if err := checkBeginning(client, stats.Partitions); err != nil {
			return stats, err
		}
	}
	total := stats.Total()
	progress(0, total)
	if total == 0 {
		return stats, nil
	}
	if s.setup != nil {
		sctx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := s.setup(sctx)
		cancel()
		if err != nil {
			return stats, fmt.Errorf("set up the %s sink's store: %w", sinkName, err)
		}
	}
	m, err := newMetrics(nil)
	if err != nil {
		return stats, err
	}
	dlq := newDeadLetters(cfg.Kafka, cfg.DLQSuffix, sinkName, cfg.DLQMaxMessageBytes, log)
	dlq.dedupe = true // the daemon may have dead-lettered these already
	defer func() {
		if err := dlq.close(); err != nil {
			log.Warn("close dead-letter producer", "err", err)
		}
	}()
	kc, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return stats, fmt.Errorf("kafka consumer: %w", err)
	}
	defer kc.Close()

	// A configuration problem the events reveal ends the replay with it.
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	r := &replayer{
		c: &consumer{
			sink: sinkName, topics: s.topics, applier: s.applier, dlq: dlq,
			metrics: m.forSink(sinkName), log: log, cfg: cfg, fail: fail,
		},
		kc: kc, client: client, stats: &stats, total: total, progress: progress, dlqTopics: map[string]bool{},
	}
	err = r.run(ctx)
	if cause := context.Cause(ctx); fatal(cause) {
		err = cause
	}
	stats.DeadLetterTopics = slices.Sorted(maps.Keys(r.dlqTopics))
	return stats, err
}

// resolveRanges resolves from and to in every partition of topics. The end
// of every range is at most the partition's end offset now.
func resolveRanges(client sarama.Client, topics []string, from, to Bound) ([]ReplayPartition, error) {
	var out []ReplayPartition
	for _, topic := range topics {
		parts, err := client.Partitions(topic)
		if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			return nil, fmt.Errorf("%w: %s (check CDCSYNC_TOPIC_PREFIX and CDCSYNC_TABLES; capture creates it)", ErrNoTopic, topic)
		}
		if err != nil {
			return nil, fmt.Errorf("partitions of %s: %w", topic, err)
		}
		for _, p := range parts {
			oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
			if err != nil {
				return nil, fmt.Errorf("oldest offset of %s/%d: %w", topic, p, err)
			}
			newest, err := kafkaclient.StableOffset(client, topic, p) // read_committed reads no further
			if err != nil {
				return nil, fmt.Errorf("end offset of %s/%d: %w", topic, p, err)
			}
			f, err := from.offsetIn(client, topic, p, oldest, newest)
			if err != nil {
				return nil, err
			}
			t, err := to.offsetIn(client, topic, p, oldest, newest)
			if err != nil {
				return nil, err
			}
			out = append(out, ReplayPartition{Topic: topic, Partition: p, From: f, To: max(t, f)})
		}
	}
	return out, nil
}

// replayer applies the ranges of one Replay, a goroutine per partition.
type replayer struct {
	c  *consumer
	kc sarama.Consumer
	// client answers whether only transaction markers are left before a
	// range's end (markers.go).
	client sarama.Client

	mu        sync.Mutex
	stats     *ReplayStats
	done      int64
	total     int64
	progress  func(done, total int64)
	dlqTopics map[string]bool
}

func (r *replayer) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, p := range r.stats.Partitions {
		if p.From >= p.To {
			continue
		}
		wg.Go(func() {
			if err := r.partition(ctx, p); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				cancel() // one partition failing ends the replay
			}
		})
	}
	wg.Wait()
	// When one partition failed, the others stopped because of it: report
	// the failure, not the cancellations it caused.
	var failures []error
	for _, err := range errs {
		if !errors.Is(err, context.Canceled) {
			failures = append(failures, err)
		}
	}
	if len(failures) > 0 {
		return errors.Join(failures...)
	}
	return errors.Join(errs...)
}

// partition applies one partition's range in batches.
func (r *replayer) partition(ctx context.Context, p ReplayPartition) error {
	pc, err := r.kc.ConsumePartition(p.Topic, p.Partition, p.From)
	if err != nil {
		return fmt.Errorf("read %s/%d from offset %d: %w", p.Topic, p.Partition, p.From, err)
	}
	// lastErr is read only after errsDone is closed.
	var (
		errsDone = make(chan struct{})
		lastErr  error
	)
	go func() {
		defer close(errsDone)
		for err := range pc.Errors() {
			lastErr = err
			r.c.log.Warn("reading partition", "topic", p.Topic, "partition", p.Partition, "err", err)
		}
	}()
	defer func() {
		pc.AsyncClose()
		<-errsDone
	}()

	// Only records before p.To reach the batches; the channel closes once
	// the last of them was handed over.
	msgs := make(chan *sarama.ConsumerMessage, min(max(r.c.cfg.BatchSize, 256), 8192))
	reached := make(chan bool, 1)
	fwdCtx, stopFwd := context.WithCancel(ctx)
	defer stopFwd()
	go func() {
		defer close(msgs)
		seen := p.From // the offset after the last record handed over
		idle := time.NewTicker(markerIdle)
		defer idle.Stop()
		moved := false
		for {
			select {
			case <-idle.C:
				// Exactly-once topics end with transaction markers, which
				// the consumer never hands out: done when only markers
				// (or aborted records) are left before To.
				if !moved && r.onlyMarkersLeft(p, seen) {
					reached <- true
					return
				}
				moved = false
			case m, ok := <-pc.Messages():
				if !ok {
					reached <- false
					return
				}
				seen, moved = m.Offset+1, true
				if m.Offset >= p.To { // records up to To were compacted away
					reached <- true
					return
				}
				select {
				case msgs <- m:
				case <-fwdCtx.Done():
					reached <- false
					return
				}
				if m.Offset+1 >= p.To {
					reached <- true
					return
				}
			case <-fwdCtx.Done():
				reached <- false
				return
			}
		}
	}()

	next := p.From
	for {
		batch, more := r.c.collect(ctx, msgs)
		if len(batch) > 0 {
			res, ok := r.c.applyBatch(ctx, batch)
			if !ok {
				break
			}
			last := batch[len(batch)-1].Offset
			r.add(res, len(batch), last+1-next)
			next = last + 1
		}
		if !more {
			break
		}
	}
	stopFwd()
	for range msgs { // let the forwarder finish
	}
	if ctx.Err() != nil {
		return fmt.Errorf("replay of %s/%d stopped at offset %d: %w", p.Topic, p.Partition, next, ctx.Err())
	}
	if !<-reached {
		<-errsDone // closed with the messages: the error that closed them is in
		cause := lastErr
		if cause == nil {
			cause = errors.New("the partition consumer closed")
		}
		return fmt.Errorf("replay of %s/%d stopped at offset %d before %d: %w", p.Topic, p.Partition, next, p.To, cause)
	}
	if next < p.To { // the range ended in a compacted gap
		r.add(batchResult{}, 0, p.To-next)
	}
	return nil
}

// add counts an applied batch of n records that covered span offsets.
func (r *replayer) add(res batchResult, n int, span int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Messages += int64(n - res.watermarks) // watermarks are not changes
	s.Tombstones += int64(res.tombstones)
	for _, m := range res.msgs {
		switch {
		case m.Err != nil && m.AlreadyDead:
			s.AlreadyDeadLettered++
		case m.Err != nil:
			s.DeadLettered++
			r.dlqTopics[m.Raw.Topic+r.c.cfg.DLQSuffix] = true
		case m.Skip != "":
			s.Skipped++
		default:
			s.Applied++
		}
	}
	r.done += span
	r.progress(r.done, r.total)
}

// Describe is a one-line account of the replayed ranges, for logs.
func (s ReplayStats) Describe() string {
	var parts []string
	for _, p := range s.Partitions {
		if p.To > p.From {
			parts = append(parts, fmt.Sprintf("%s/%d [%d,%d)", p.Topic, p.Partition, p.From, p.To))
		}
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

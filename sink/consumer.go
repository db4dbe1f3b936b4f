package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/kafkaclient"
	"github.com/cdcsync/cdcsync/pipeline"
)

// consumer runs one sink: a consumer group over the sink's topics whose
// claims collect batches, apply them through the sink's Applier, dead-letter
// what can never be applied, and only then mark the offsets for commit.
type consumer struct {
	sink   string
	group  string
	topics []string
	// setup prepares the store (creates tables); it is retried until it
	// succeeds before consuming starts. Optional.
	setup   func(context.Context) error
	applier Applier
	dlq     *deadLetters
	metrics *sinkMetrics
	log     *slog.Logger
	cfg     config.Sink
	// probe checks that the store answers, every storeCheck while the
	// sink runs; nil disables the checks.
	probe      func(context.Context) error
	storeCheck time.Duration
	// health receives the sink's state for /readyz; nil reports nothing.
	health *sinkHealth
	// positions receives the store's applied-through position after each
	// batch with a watermark; nil keeps none.
	positions *AppliedPositions
	// fail stops the sink with a fatal error (a configuration problem the
	// events revealed); nil retries such errors like any other.
	fail func(error)
	// gaps checks each claim for records lost before it (gap.go); set by
	// run.
	gaps *gapGuard
	// epoch is the redis sink's Redis data epoch, committed with its
	// offsets so that a Redis that lost its data is rebuilt (see
	// rebuildLost); nil for the inventory sink and replay.
	epoch *redisEpoch
	loss  sessionLoss
	// claimCtx is the running session's context for its claims, which
	// loss may end early.
	claimCtxMu sync.Mutex
	claimCtx   context.Context
}

var _ sarama.ConsumerGroupHandler = (*consumer)(nil)

// attemptTimeout bounds one attempt to apply a batch, so that a database
// that stopped answering (rather than refusing connections) is retried
// like one that is down.
const attemptTimeout = 30 * time.Second

// probeTimeout bounds one check that the store answers: a store that
// takes longer is as good as down.
const probeTimeout = 5 * time.Second

// commitInterval is how often the offsets of applied batches are committed.
const commitInterval = 200 * time.Millisecond

// saramaConfig is the consumer group configuration.
func (c *consumer) saramaConfig() (*sarama.Config, error) {
	sc, err := kafkaclient.Config(c.cfg.Kafka)
	if err != nil {
		return nil, err
	}
	// Offsets are marked only after their batch is applied (and its dead
	// letters written); sarama commits marked offsets every interval and
	// once more when a session ends (rebalance, shutdown). Committing after
	// every batch instead would put a broker round trip in each batch's
	// critical path for nothing: committed offsets never pass what is
	// applied either way, and a replay after a crash is idempotent.
	sc.Consumer.Offsets.AutoCommit.Enable = true
	sc.Consumer.Offsets.AutoCommit.Interval = commitInterval
	// A new group starts at the beginning: the topics hold the snapshot.
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sc.Consumer.Return.Errors = true
	// Applying a batch can take a while (a database down); sarama then just
	// stops fetching the partition until the handler reads again.
	sc.Consumer.MaxProcessingTime = time.Second
	sc.ChannelBufferSize = min(max(c.cfg.BatchSize, 256), 8192)
	sc.Consumer.Fetch.Default = 4 << 20
	sc.Metadata.AllowAutoTopicCreation = false
	if id := groupInstanceID(c.cfg); id != "" && (c.cfg.GroupInstanceID != "" || sc.Version.IsAtLeast(sarama.V2_3_0_0)) {
		// A derived id only where the brokers support static membership;
		// one set explicitly is validated by sarama.
		sc.Consumer.Group.InstanceId = id
	}
	setGroupTimeouts(sc, c.cfg.ShutdownTimeout)
	return sc, nil
}

// run consumes until ctx is cancelled. Outages of the store and the
// brokers and missing topics are retried with backoff; only a
// configuration error is returned.
func (c *consumer) run(ctx context.Context) error {
	sc, err := c.saramaConfig()
	if err != nil {
		return err
	}
	if !c.prepare(ctx) {
		return nil
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	checks, stopChecks := context.WithCancel(ctx)
	defer stopChecks()
	wg.Go(func() { c.checkStore(checks) })
	group, err := c.connect(ctx, sc)
	if err != nil || group == nil {
		return err
	}
	c.gaps = &gapGuard{brokers: c.cfg.Kafka.Brokers, sc: sc, group: c.group}
	defer c.gaps.close()
	wg.Go(func() {
		for err := range group.Errors() {
			if !c.reportOutOfRange(err) {
				c.log.Warn("consumer group error", "group", c.group, "err", err)
			}
		}
	})
	defer func() {
		if err := group.Close(); err != nil {
			c.log.Warn("close consumer group", "group", c.group, "err", err)
		}
	}()
	c.log.Info("sink started", "group", c.group, "topics", c.topics)
	b := newBackoff(200*time.Millisecond, c.cfg.RetryMax)
	c.health.waiting("joining consumer group " + c.group)
	for ctx.Err() == nil {
		// Consume returns at every rebalance; loop to join the next one.
		err := group.Consume(ctx, c.topics, c)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			c.health.waiting(fmt.Sprintf("cannot join consumer group %s (retrying): %v", c.group, err))
			c.log.Warn("consume failed; retrying", "group", c.group, "topics", c.topics, "err", err)
			if !b.wait(ctx) {
				break
			}
			continue
		}
		b = newBackoff(200*time.Millisecond, c.cfg.RetryMax)
	}
	c.log.Info("sink stopped", "group", c.group)
	return nil
}

// prepare runs setup until it succeeds; false means ctx ended first.
func (c *consumer) prepare(ctx context.Context) bool {
	if c.setup == nil {
		return true
	}
	b := newBackoff(200*time.Millisecond, c.cfg.RetryMax)
	c.health.waiting("setting up its store")
	for {
		err := c.setup(ctx)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if c.fail != nil && fatal(err) {
			c.fail(err) // a store that cannot work as configured
			return false
		}
		c.health.waiting(fmt.Sprintf("setting up its store fails (retrying): %v", err))
		c.log.Warn("sink setup failed; retrying", "err", err)
		if !b.wait(ctx) {
			return false
		}
	}
}

// connect creates the consumer group, retrying while the brokers cannot
// be reached. It returns nil, nil when ctx ended first.
func (c *consumer) connect(ctx context.Context, sc *sarama.Config) (sarama.ConsumerGroup, error) {
	b := newBackoff(200*time.Millisecond, c.cfg.RetryMax)
	c.health.waiting("connecting to Kafka")
	for {
		group, err := sarama.NewConsumerGroup(c.cfg.Kafka.Brokers, c.group, sc)
		if err == nil {
			return group, nil
		}
		var confErr sarama.ConfigurationError
		if errors.As(err, &confErr) {
			return nil, fmt.Errorf("consumer group %s: %w", c.group, err)
		}
		c.health.waiting(fmt.Sprintf("cannot connect to Kafka (retrying): %v", err))
		c.log.Warn("connect to kafka failed; retrying", "group", c.group, "err", err)
		if !b.wait(ctx) {
			return nil, nil
		}
	}
}

// checkStore probes the store every storeCheck until ctx ends, so that
// readiness follows the store while no changes arrive.
func (c *consumer) checkStore(ctx context.Context) {
	if c.probe == nil || c.health == nil {
		return
	}
	t := time.NewTicker(c.storeCheck)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		err := c.probe(pctx)
		if err == nil && c.epoch != nil {
			// An idle sink learns here that Redis lost its data.
			if lost, _ := c.epoch.changed(pctx); lost {
				c.redisLost(errRedisLost)
			}
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.health.storeChecked(err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Setup is called at the start of a session, before ConsumeClaim.
func (c *consumer) Setup(sess sarama.ConsumerGroupSession) error {
	// A member of the group, even one left without partitions (more
	// members than partitions), is doing its job.
	c.log.Debug("partitions assigned", "group", c.group, "claims", sess.Claims(), "generation", sess.GenerationID())
	if err := c.rebuildLost(sess); err != nil {
		c.log.Warn("check for lost Redis data failed; rejoining", "group", c.group, "err", err)
		return err
	}
	ctx := c.loss.start(sess)
	c.claimCtxMu.Lock()
	c.claimCtx = ctx
	c.claimCtxMu.Unlock()
	c.health.joined()
	return nil
}

// Cleanup is called at the end of a session, after every ConsumeClaim.
func (c *consumer) Cleanup(sess sarama.ConsumerGroupSession) error {
	c.log.Debug("partitions released", "group", c.group, "claims", sess.Claims(), "generation", sess.GenerationID())
	return nil
}

// ConsumeClaim applies one partition batch by batch until the session ends
// (a rebalance or shutdown) or the claim's messages close.
func (c *consumer) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	if !c.mayConsume(sess, claim) {
		return nil
	}
	defer c.metrics.dropLag(claim.Topic(), claim.Partition())
	ctx := c.claimContext()
	next := claim.InitialOffset() // the offset after what was handled (negative: not known yet)
	for {
		batch, more := c.collectOrIdle(ctx, claim.Messages(), c.markerWait(claim, next))
		if len(batch) == 0 && more { // idle: only markers may be left
			next = c.stepOverMarkers(sess, claim, next)
			continue
		}
		if len(batch) > 0 && !c.process(ctx, sess, batch) {
			return nil
		}
		if len(batch) > 0 {
			next = batch[len(batch)-1].Offset + 1
			c.metrics.setLag(claim.Topic(), claim.Partition(), claim.HighWaterMarkOffset()-next)
		}
		if !more {
			return nil
		}
	}
}

// collect returns the next batch of at most BatchSize messages. When
// messages are already waiting (they arrived while the previous batch was
// being applied) it takes what is there and returns at once: their wait
// already gave the batching, and lingering would only add latency. When
// the partition was idle, it waits up to BatchTimeout after the first
// message for more to arrive. more is false when the claim is over; a
// batch cut short by the end of the session is dropped unapplied (its
// messages come again to whoever owns the partition next).
func (c *consumer) collect(ctx context.Context, msgs <-chan *sarama.ConsumerMessage) (batch []*sarama.ConsumerMessage, more bool) {
	return c.collectOrIdle(ctx, msgs, nil)
}

// collectOrIdle is collect that also returns, with no batch and more
// true, when idle fires before the first message (nil: never).
func (c *consumer) collectOrIdle(ctx context.Context, msgs <-chan *sarama.ConsumerMessage, idle <-chan time.Time) (batch []*sarama.ConsumerMessage, more bool) {
	waiting := true
	select {
	case m, ok := <-msgs:
		if !ok {
			return nil, false
		}
		batch = append(batch, m)
	default:
		waiting = false
		select {
		case m, ok := <-msgs:
			if !ok {
				return nil, false
			}
			batch = append(batch, m)
		case <-idle:
			return nil, true
		case <-ctx.Done():
			return nil, false
		}
	}
	for len(batch) < c.cfg.BatchSize {
		select {
		case m, ok := <-msgs:
			if !ok {
				return batch, false
			}
			batch = append(batch, m)
			continue
		default:
		}
		break
	}
	if waiting || len(batch) >= c.cfg.BatchSize {
		return batch, true
	}
	timer := time.NewTimer(c.cfg.BatchTimeout)
	defer timer.Stop()
	for len(batch) < c.cfg.BatchSize {
		select {
		case m, ok := <-msgs:
			if !ok {
				return batch, false
			}
			batch = append(batch, m)
		case <-timer.C:
			return batch, true
		case <-ctx.Done():
			return nil, false
		}
	}
	return batch, true
}

// process applies a batch, dead-letters the messages that can never be
// applied, then marks the offset after the batch for sarama to commit. It
// returns false when the batch was abandoned because the session ended
// while a step was failing: its offset is not marked and the batch will be
// consumed again, which is harmless because applying is idempotent.
func (c *consumer) process(ctx context.Context, sess sarama.ConsumerGroupSession, raws []*sarama.ConsumerMessage) bool {
	if _, ok := c.applyBatch(ctx, raws); !ok {
		return false
	}
	last := raws[len(raws)-1]
	sess.MarkOffset(last.Topic, last.Partition, last.Offset+1, c.offsetMetadata())
	return true
}

// batchResult is what became of an applied batch's messages: each has Err
// set (dead-lettered), Skip set (changed nothing) or neither (applied).
type batchResult struct {
	msgs       []*Message
	tombstones int
	watermarks int // records saying how far the partition is complete
}

// applyBatch decodes and applies a batch, retrying failures until it
// succeeds or stop ends, and writes the messages that can never be
// applied to the dead-letter topic. ok is false when the batch was
// abandoned because stop ended while a step was failing. It marks no
// offset: the daemon commits after it, Replay commits nothing.
func (c *consumer) applyBatch(stop context.Context, raws []*sarama.ConsumerMessage) (res batchResult, ok bool) {
	start := time.Now()
	first, last := raws[0], raws[len(raws)-1]
	log := c.log.With("topic", first.Topic, "partition", first.Partition, "offsets", fmt.Sprintf("%d-%d", first.Offset, last.Offset))

	msgs := make([]*Message, 0, len(raws))
	tombstones := 0
	mark := c.watermark(raws)
	watermarks := 0
	for _, raw := range raws {
		if pipeline.IsWatermark(raw.Headers) {
			watermarks++
			continue
		}
		if m := decodeMessage(raw); m != nil {
			msgs = append(msgs, m)
		} else {
			tombstones++
		}
	}

	// Stop retrying when the session ends, but let an attempt in progress
	// finish (bounded by the shutdown timeout) so that its offsets can be
	// committed rather than the work redone.
	run, cancel := graceContext(stop, c.cfg.ShutdownTimeout)
	defer cancel()

	err := retry(stop, run, c.cfg.RetryMax, func(ctx context.Context) error {
		todo := pending(msgs)
		if len(todo) == 0 && mark == nil {
			return nil
		}
		ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
		return c.apply(ctx, todo, mark)
	}, func(attempt int, err error) {
		if c.fail != nil && fatal(err) {
			c.fail(err)
		}
		if isRedisLost(err) {
			c.redisLost(err)
		}
		c.metrics.applyRetries.Inc()
		c.health.applyFailed(err)
		log.Warn("apply failed; retrying", "attempt", attempt, "err", err)
	})
	if err != nil {
		log.Info("batch abandoned at end of session; it will be consumed again", "err", err)
		return batchResult{}, false
	}
	c.health.applied()

	var dead []*Message
	for _, m := range msgs {
		if m.Err != nil {
			dead = append(dead, m)
		}
	}
	if len(dead) > 0 {
		err := retry(stop, run, c.cfg.RetryMax, func(context.Context) error {
			return c.dlq.send(dead)
		}, func(attempt int, err error) {
			c.metrics.dlqRetries.Inc()
			log.Warn("dead-letter write failed; retrying", "attempt", attempt, "err", err)
		})
		if err != nil {
			log.Info("batch abandoned at end of session; it will be consumed again", "err", err)
			return batchResult{}, false
		}
		for _, m := range dead {
			log.Warn("message dead-lettered", "offset", m.Raw.Offset, "dlq", m.Raw.Topic+c.cfg.DLQSuffix, "err", m.Err)
		}
	}

	// Counted before the offset is marked, so that whoever sees it
	// committed also sees the batch in the metrics.
	c.record(msgs, tombstones, start)
	return batchResult{msgs: msgs, tombstones: tombstones, watermarks: watermarks}, true
}

// record updates the metrics of an applied batch.
func (c *consumer) record(msgs []*Message, tombstones int, start time.Time) {
	now := time.Now()
	m := c.metrics
	m.batchSize.Observe(float64(len(msgs) + tombstones))
	m.applySeconds.Observe(now.Sub(start).Seconds())
	m.skipped[skipTombstone].Add(float64(tombstones))
	for _, msg := range msgs {
		switch {
		case msg.Err != nil:
			m.deadLettered.Inc()
		case msg.Skip != "":
			m.skipped[msg.Skip].Inc()
		default:
			m.applied.Inc()
			if s := msg.Event.Source; s.TsMs > 0 && (s.Snapshot == "" || s.Snapshot == "false") {
				m.endToEnd.Observe(now.Sub(time.UnixMilli(s.TsMs)).Seconds())
			}
		}
	}
}

// pending returns the messages not already known to be unappliable.
func pending(msgs []*Message) []*Message {
	out := make([]*Message, 0, len(msgs))
	for _, m := range msgs {
		if m.Err == nil {
			out = append(out, m)
		}
	}
	return out
}

// graceContext returns a context that is not cancelled with stop itself but
// grace after stop is done, bounding how long work in progress may take to
// finish at shutdown.
func graceContext(stop context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(stop))
	var mu sync.Mutex
	var timer *time.Timer
	unregister := context.AfterFunc(stop, func() {
		mu.Lock()
		timer = time.AfterFunc(grace, cancel)
		mu.Unlock()
	})
	return ctx, func() {
		unregister()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

// Package sink consumes change topics and applies them to the inventory
// store (Postgres) and the Redis caches, idempotently by stream position.
//
// Each sink is one consumer group (<group prefix>-<sink>). A partition's
// messages are applied in batches; a batch's offsets are committed only
// after it is durably applied and its unappliable messages are in the
// dead-letter topic. Delivery is at least once; applying is idempotent by
// position, so the effect is exactly once.
package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/config"
)

// defaultShutdownTimeout applies when cfg.ShutdownTimeout is unset (a
// configuration built in code rather than read from the environment).
const defaultShutdownTimeout = 8 * time.Second

// Run consumes and applies changes for the sinks named in cfg.Sinks until
// ctx is cancelled; it commits offsets only for applied batches. It returns
// nil after a clean shutdown and an error only for a configuration that
// cannot work: outages of Kafka, Postgres or Redis are retried forever.
func Run(ctx context.Context, cfg config.Sink, logger *slog.Logger, reg prometheus.Registerer, opts ...Option) error {
	o := newOptions(opts)
	ready := newReadiness(o.ready)
	defer ready.stop("stopped")
	stopReporting := context.AfterFunc(ctx, func() { ready.stop("shutting down") })
	defer stopReporting()

	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = defaultShutdownTimeout
	}
	m, err := newMetrics(reg)
	if err != nil {
		return err
	}
	positions := o.applied
	if positions == nil {
		positions = NewAppliedPositions()
	}
	if reg != nil {
		if err := reg.Register(positions); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return fmt.Errorf("register applied-position metrics: %w", err)
		}
	}
	st, err := openStores(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer st.close()

	// The sinks run side by side; a fatal error in one stops all.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	// Only the first failure is kept: the others are its consequences (or
	// the same configuration problem met on another partition).
	failed := func(sink string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		errs = append(errs, fmt.Errorf("sink %s: %w", sink, err))
		cancel()
	}
	consumers := make([]*consumer, 0, len(st.list))
	for _, s := range st.list {
		log := logger.With("sink", s.sink)
		dlq := newDeadLetters(cfg.Kafka, cfg.DLQSuffix, s.sink, cfg.DLQMaxMessageBytes, log)
		defer func() {
			if err := dlq.close(); err != nil {
				log.Warn("close dead-letter producer", "err", err)
			}
		}()
		consumers = append(consumers, &consumer{
			sink: s.sink, group: cfg.GroupPrefix + "-" + s.sink, topics: s.topics,
			setup: s.setup, applier: s.applier, dlq: dlq, metrics: m.forSink(s.sink), log: log, cfg: cfg,
			probe: s.probe, storeCheck: o.storeCheck, health: ready.add(s.sink), positions: positions,
			fail: func(err error) { failed(s.sink, err) }, epoch: s.epoch,
		})
		positions.register(s.sink)
	}
	for _, s := range st.list {
		for _, run := range s.background {
			wg.Go(func() { run(ctx) })
		}
		if s.applied != nil {
			wg.Go(func() { positions.follow(ctx, s.sink, s.applied, logger) })
		}
	}
	for _, c := range consumers {
		wg.Go(func() {
			if err := c.run(ctx); err != nil {
				failed(c.sink, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

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

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

// defaultShutdownTimeout applies when cfg.ShutdownTimeout is unset (a
// configuration built in code rather than read from the environment).
const defaultShutdownTimeout = 8 * time.Second

// Run consumes and applies changes for the sinks named in cfg.Sinks until
// ctx is cancelled; it commits offsets only for applied batches. It returns
// nil after a clean shutdown and an error only for a configuration that
// cannot work: outages of Kafka, Postgres or Redis are retried forever.
func Run(ctx context.Context, cfg config.Sink, logger *slog.Logger, reg prometheus.Registerer) error {
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

	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()

	// One Redis client serves both sinks: the row cache belongs to the redis
	// sink, the availability cache to the inventory sink. Without a Redis
	// URL the inventory sink runs without the availability cache.
	var rdb redis.UniversalClient
	if cfg.RedisURL != "" {
		opts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return &config.Error{Var: config.Prefix + "_REDIS_URL", Problem: "cannot be used: " + err.Error()}
		}
		client := redis.NewClient(opts)
		closers = append(closers, func() { _ = client.Close() })
		rdb = client
	} else if cfg.Has(config.SinkInventory) {
		logger.Warn("CDCSYNC_REDIS_URL is empty: the inventory sink runs without the availability cache")
	}

	var consumers []*consumer
	newConsumer := func(sink string, topics []string, applier Applier, setup func(context.Context) error) {
		log := logger.With("sink", sink)
		dlq := newDeadLetters(cfg.Kafka, cfg.DLQSuffix, sink, log)
		closers = append(closers, func() {
			if err := dlq.close(); err != nil {
				log.Warn("close dead-letter producer", "err", err)
			}
		})
		consumers = append(consumers, &consumer{
			sink: sink, group: cfg.GroupPrefix + "-" + sink, topics: topics,
			setup: setup, applier: applier, dlq: dlq, metrics: m.forSink(sink), log: log, cfg: cfg,
		})
	}

	if cfg.Has(config.SinkInventory) {
		orders, err := newOrderSchema(cfg.Inventory)
		if err != nil {
			return &config.Error{Var: config.Prefix + "_ORDERS_TABLE", Problem: err.Error()}
		}
		pcfg, err := pgxpool.ParseConfig(cfg.InventoryURL)
		if err != nil {
			return &config.Error{Var: config.Prefix + "_INVENTORY_URL", Problem: "is not a usable postgres connection string"}
		}
		pool, err := pgxpool.NewWithConfig(ctx, pcfg) // connects lazily
		if err != nil {
			return fmt.Errorf("inventory store: %w", err)
		}
		closers = append(closers, pool.Close)
		inv := &inventory{pool: pool, orders: orders}
		if rdb != nil {
			inv.avail = newAvailability(rdb)
		}
		topic := pipeline.Topic(cfg.TopicPrefix, orders.schema, orders.table)
		newConsumer(config.SinkInventory, []string{topic}, inv, func(ctx context.Context) error {
			if err := inv.ensureSchema(ctx); err != nil {
				return err
			}
			if inv.avail != nil {
				_ = inv.avail.script.Load(ctx, rdb) // else loaded on first NOSCRIPT
			}
			return nil
		})
	}
	if cfg.Has(config.SinkRedis) {
		if rdb == nil {
			return &config.Error{Var: config.Prefix + "_REDIS_URL", Problem: "required when CDCSYNC_SINKS includes redis, but not set"}
		}
		topics := make([]string, 0, len(cfg.Tables))
		for _, t := range cfg.Tables {
			schema, table, err := splitTable(t)
			if err != nil {
				return &config.Error{Var: config.Prefix + "_TABLES", Problem: err.Error()}
			}
			topics = append(topics, pipeline.Topic(cfg.TopicPrefix, schema, table))
		}
		rc := newRowCache(rdb)
		newConsumer(config.SinkRedis, topics, rc, func(ctx context.Context) error {
			_ = rc.script.Load(ctx, rdb) // best effort: reloaded on NOSCRIPT
			return nil
		})
	}

	// The sinks run side by side; a fatal error in one stops all.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, c := range consumers {
		wg.Go(func() {
			if err := c.run(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("sink %s: %w", c.sink, err))
				mu.Unlock()
				cancel()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

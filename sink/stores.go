package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

// store is one sink's side of the world: the topics it consumes, the
// Applier that writes them, and how to prepare and probe its store. The
// daemon (Run) and Replay build theirs the same way, so a replay applies
// exactly as the daemon does.
type store struct {
	sink    string
	topics  []string
	applier Applier
	// setup prepares the store (creates tables); nil when there is nothing
	// to prepare.
	setup func(context.Context) error
	// probe checks that the store answers; its error names the store.
	probe func(context.Context) error
	// epoch is the redis sink's Redis data epoch (see rebuildLost); nil
	// for the inventory sink.
	epoch *redisEpoch
	// background runs beside the daemon's consumer until ctx ends (the
	// availability refresh queue, the tombstone sweep). Replay does not
	// run it.
	background []func(context.Context)
	// applied reads the store's applied-through position (nil: it keeps
	// none); the daemon follows it (AppliedPositions.follow).
	applied func(context.Context) (Applied, error)
}

// stores are the stores of the sinks named in cfg.Sinks, with the
// connections they share.
type stores struct {
	list    []store
	closers []func()
}

// close releases the connections, last opened first.
func (s *stores) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// openStores builds the stores of the sinks named in cfg.Sinks. Connections
// are opened lazily, so an unreachable store is not an error here; a
// configuration that cannot work is (*config.Error).
func openStores(ctx context.Context, cfg config.Sink, logger *slog.Logger) (*stores, error) {
	s := &stores{}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()

	// One Redis client serves both sinks: the row cache belongs to the redis
	// sink, the availability cache to the inventory sink, which runs
	// without it (and without Redis) when CDCSYNC_AVAILABILITY_CACHE=off.
	var rdb redis.UniversalClient
	if cfg.Has(config.SinkRedis) || cfg.AvailabilityCacheOn() {
		opts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return nil, &config.Error{Var: config.Prefix + "_REDIS_URL", Problem: config.RedisURLProblem(cfg.RedisURL)}
		}
		client := redis.NewClient(opts)
		s.closers = append(s.closers, func() { _ = client.Close() })
		rdb = client
	}

	if cfg.Has(config.SinkInventory) {
		var cache redis.UniversalClient
		if cfg.AvailabilityCacheOn() {
			cache = rdb
		} else {
			logger.Info("availability cache off (CDCSYNC_AVAILABILITY_CACHE=off): the inventory sink does not use Redis")
		}
		st, err := s.inventoryStore(ctx, cfg, cache, logger.With("sink", config.SinkInventory))
		if err != nil {
			return nil, err
		}
		s.list = append(s.list, st)
	}
	if cfg.Has(config.SinkRedis) {
		if rdb == nil {
			return nil, &config.Error{Var: config.Prefix + "_REDIS_URL", Problem: "required when CDCSYNC_SINKS includes redis, but not set"}
		}
		topics := make([]string, 0, len(cfg.Tables))
		for _, t := range cfg.Tables {
			schema, table, err := splitTable(t)
			if err != nil {
				return nil, &config.Error{Var: config.Prefix + "_TABLES", Problem: err.Error()}
			}
			topics = append(topics, pipeline.Topic(cfg.TopicPrefix, schema, table))
		}
		rc := newRowCache(rdb)
		rc.applied = &redisApplied{rdb: rdb, sink: config.SinkRedis, topics: topics, epoch: rc.epoch}
		s.list = append(s.list, store{
			sink: config.SinkRedis, topics: topics, applier: rc, epoch: rc.epoch, applied: rc.applied.read,
			setup: func(ctx context.Context) error {
				if err := checkRedis(ctx, rdb, logger); err != nil {
					return err
				}
				if _, _, err := rc.epoch.load(ctx); err != nil {
					return err
				}
				_ = rc.script.Load(ctx, rdb) // best effort: reloaded on NOSCRIPT
				return nil
			},
			probe: func(ctx context.Context) error { return pingRedis(ctx, rdb, "Redis") },
			background: []func(context.Context){(&tombstoneSweeper{
				cfg: cfg, topics: topics, log: logger.With("sink", config.SinkRedis),
				sweep: newVersionSweeper(rdb, cfg.Tables).sweep,
			}).run},
		})
	}
	ok = true
	return s, nil
}

func (s *stores) inventoryStore(ctx context.Context, cfg config.Sink, rdb redis.UniversalClient, log *slog.Logger) (store, error) {
	orders, err := newOrderSchema(cfg.Inventory)
	if err != nil {
		return store{}, &config.Error{Var: config.Prefix + "_ORDERS_TABLE", Problem: err.Error()}
	}
	pcfg, err := pgxpool.ParseConfig(cfg.InventoryURL)
	if err != nil {
		return store{}, &config.Error{Var: config.Prefix + "_INVENTORY_URL", Problem: "is not a usable postgres connection string"}
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg) // connects lazily
	if err != nil {
		return store{}, fmt.Errorf("inventory store: %w", err)
	}
	s.closers = append(s.closers, pool.Close)
	topic := pipeline.Topic(cfg.TopicPrefix, orders.schema, orders.table)
	inv := &inventory{pool: pool, orders: orders, topic: topic, log: log}
	var guard *availabilityGuard
	if rdb != nil {
		inv.avail = newAvailability(rdb)
		inv.availApplied = &redisApplied{rdb: rdb, sink: config.SinkInventory, topics: []string{topic}}
		guard = &availabilityGuard{inv: inv, epoch: newRedisEpoch(rdb, config.SinkInventory), log: log}
	}
	// With the cache off the queue is still drained (emptied), so that it
	// does not grow.
	queue := &availabilityQueue{inv: inv, log: log, retryMax: cfg.RetryMax}
	return store{
		sink:    config.SinkInventory,
		topics:  []string{topic},
		applier: inv,
		setup: func(ctx context.Context) error {
			if err := inv.ensureSchema(ctx); err != nil {
				return err
			}
			if inv.avail != nil {
				if err := checkRedis(ctx, rdb, log); err != nil {
					return err
				}
				_ = inv.avail.script.Load(ctx, rdb) // else loaded on first NOSCRIPT
				return guard.check(ctx)
			}
			return nil
		},
		background: []func(context.Context){queue.run, (&tombstoneSweeper{
			cfg: cfg, topics: []string{topic}, log: log, sweep: inv.sweepProjection,
		}).run},
		applied: inv.readApplied,
		probe: func(ctx context.Context) error {
			var errs []error
			if err := pool.Ping(ctx); err != nil {
				errs = append(errs, fmt.Errorf("inventory store (Postgres): %w", err))
			}
			if rdb != nil {
				err := pingRedis(ctx, rdb, "availability cache (Redis)")
				if err == nil {
					err = guard.check(ctx)
				}
				errs = append(errs, err)
			}
			return errors.Join(errs...)
		},
	}, nil
}

// pingRedis checks that Redis answers; the error names what it is for.
func pingRedis(ctx context.Context, rdb redis.UniversalClient, what string) error {
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

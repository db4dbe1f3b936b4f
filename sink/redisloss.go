package sink

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/config"
)

// EpochKey is the Redis key of a sink's epoch: a random token written
// into a Redis that has none. Redis that loses its data (a restart without
// persistence, FLUSHALL, a failover to an empty replica) loses the token
// with it, and the sink notices: the row cache's script refuses to write
// under another epoch than the one the sink loaded, and the redis sink's
// committed offsets carry the epoch their batches were applied under; the
// inventory sink checks its epoch with every store check. Each sink has
// its own, so that each notices whatever the other did first.
func EpochKey(sink string) string { return "cdcsync:epoch:" + sink }

// errRedisLost says that Redis no longer holds the epoch the sink wrote
// under: its data was lost since.
var errRedisLost = errors.New("Redis lost its data (its epoch key is gone or changed)")

// epochReply is what apply.lua returns when the epoch does not match.
const epochReply = -1

// redisEpoch is the epoch a sink writes under.
type redisEpoch struct {
	rdb redis.UniversalClient
	key string
	mu  sync.Mutex
	cur string
}

func newRedisEpoch(rdb redis.UniversalClient, sink string) *redisEpoch {
	return &redisEpoch{rdb: rdb, key: EpochKey(sink)}
}

// load reads the epoch, writing a new one first when Redis has none (an
// empty Redis, or one that lost its data: created says so), and makes it
// the sink's.
func (e *redisEpoch) load(ctx context.Context) (cur string, created bool, err error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	// SET NX then GET: whichever sink process comes first, all agree.
	// (SET ... NX rather than SETNX: the ACL grants SET.)
	err = e.rdb.SetArgs(ctx, e.key, hex.EncodeToString(b[:]), redis.SetArgs{Mode: "NX"}).Err()
	switch {
	case err == nil:
		created = true
	case !errors.Is(err, redis.Nil):
		return "", false, fmt.Errorf("redis epoch: %w", err)
	}
	cur, err = e.rdb.Get(ctx, e.key).Result()
	if err != nil {
		return "", false, fmt.Errorf("redis epoch: %w", err)
	}
	e.mu.Lock()
	e.cur = cur
	e.mu.Unlock()
	return cur, created, nil
}

// current is the epoch loaded last ("" before the first load).
func (e *redisEpoch) current() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cur
}

// changed reports whether Redis no longer holds the epoch loaded last
// (false before the first load).
func (e *redisEpoch) changed(ctx context.Context) (bool, error) {
	cur := e.current()
	if cur == "" {
		return false, nil
	}
	got, err := e.rdb.Get(ctx, e.key).Result()
	if errors.Is(err, redis.Nil) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("redis epoch: %w", err)
	}
	return got != cur, nil
}

// checkEvictionPolicy refuses a Redis whose maxmemory-policy may evict
// keys without a TTL (allkeys-*): a version key evicted while its row is
// deleted would let an older event resurrect the row, silently. A user
// not allowed CONFIG GET only loses the check (logged by the caller).
func checkEvictionPolicy(ctx context.Context, rdb redis.UniversalClient) (warning string, err error) {
	res, err := rdb.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		var replyErr redis.Error
		if errors.As(err, &replyErr) {
			return fmt.Sprintf("cannot check Redis's maxmemory-policy (%v): make sure it is not allkeys-*", err), nil
		}
		return "", fmt.Errorf("redis maxmemory-policy: %w", err)
	}
	if p := res["maxmemory-policy"]; strings.HasPrefix(p, "allkeys-") {
		return "", &config.Error{Var: config.Prefix + "_REDIS_URL", Problem: fmt.Sprintf(
			"Redis has maxmemory-policy %s, which may evict the sinks' version keys (an old event would then resurrect a deleted row) and availability values: set it to noeviction (or a volatile-* policy)", p)}
	}
	return "", nil
}

// checkRedis checks, at start, that Redis can keep the sinks' data: it
// refuses an allkeys-* eviction policy (a fatal *config.Error).
func checkRedis(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger) error {
	warning, err := checkEvictionPolicy(ctx, rdb)
	if warning != "" {
		log.Warn(warning)
	}
	return err
}

// availabilityGuard refreshes every item's availability when Redis lost
// the availability cache: at start when the inventory sink's epoch is
// missing (a new Redis, or one that lost its data while the sink was
// down), and when a store check finds it gone or changed.
type availabilityGuard struct {
	inv   *inventory
	epoch *redisEpoch
	log   *slog.Logger
	// pending is set while a refresh of every item is owed (one failed).
	pending atomic.Bool
}

// check loads the epoch when it is new or changed and refreshes every
// item then; a failed refresh is retried by the next check.
func (g *availabilityGuard) check(ctx context.Context) error {
	if g == nil {
		return nil
	}
	changed, err := g.epoch.changed(ctx)
	if err != nil {
		return fmt.Errorf("availability cache (Redis): %w", err)
	}
	if g.epoch.current() == "" || changed {
		_, created, err := g.epoch.load(ctx)
		if err != nil {
			return fmt.Errorf("availability cache (Redis): %w", err)
		}
		if created || changed {
			g.log.Warn("the availability cache has no epoch (a new Redis, or one that lost its data): refreshing every item")
			g.pending.Store(true)
		}
	}
	if !g.pending.Load() {
		return nil
	}
	// Its own time: a large item table takes longer than a store check.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), attemptTimeout)
	defer cancel()
	n, err := g.inv.refreshAll(rctx)
	if err != nil {
		return fmt.Errorf("availability cache (Redis): refresh every item after a loss: %w", err)
	}
	g.pending.Store(false)
	g.log.Info("availability cache refreshed", "items", n)
	return nil
}

// refreshAll writes every item's availability to the cache, through the
// refresh queue (which writes each item's current value with its current
// version), and returns how many items it queued.
func (a *inventory) refreshAll(ctx context.Context) (int64, error) {
	tag, err := a.pool.Exec(ctx, sqlQueueAllItems)
	if err != nil {
		return 0, fmt.Errorf("inventory queue every item for a refresh: %w", err)
	}
	return tag.RowsAffected(), a.drainQueue(ctx, false)
}

package sink

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/kafkaclient"
)

// Deleted rows leave tombstones in the sinks: the inventory projection
// keeps the order's row with deleted = true, the row cache keeps the row's
// cdcver: key. They make a late event older than the delete stale instead
// of resurrecting the row. They are kept for a horizon, then dropped:
//
//   - Per key, events reach a partition in commit order, and a sink commits
//     an offset only after applying everything before it. Once the delete
//     is applied and committed, re-delivery (a crash, a rebalance) starts
//     after it: no older event of the key comes again that way.
//   - A replay of a whole topic (--from beginning, to the end) delivers the
//     older events and then the delete, so it ends right with or without
//     the tombstone. On a compacted topic Kafka itself drops the delete's
//     tombstone record delete.retention.ms after compacting; a consumer
//     further behind than that may miss the delete, which is Kafka's own
//     contract. The horizon defaults to that setting of the sink's topics.
//   - What a dropped tombstone exposes is a replay of a partial range that
//     holds an older event of a row deleted more than the horizon ago but
//     not its delete: README ("Inventory store and availability") says so.
//
// The sweep never races a new write of the same key: the inventory deletes
// only rows still deleted and old enough when it deletes them (Postgres
// re-checks a row a concurrent transaction changed), the Redis sweep checks
// and sets the expiry in one script, and a later write of the row (SET of
// its version) clears the expiry.

// tombstoneSweeper drops a sink's tombstones older than the horizon.
type tombstoneSweeper struct {
	cfg    config.Sink
	topics []string
	log    *slog.Logger
	// sweep drops the tombstones older than horizon, returning how many.
	sweep func(ctx context.Context, horizon time.Duration) (int64, error)
}

// run sweeps every quarter of the horizon (between 100ms and 10 minutes)
// until ctx ends.
func (s *tombstoneSweeper) run(ctx context.Context) {
	b := newBackoff(time.Second, max(s.cfg.RetryMax, time.Second))
	var horizon time.Duration
	for horizon == 0 {
		h, err := s.horizon()
		if err == nil {
			horizon = h
			break
		}
		s.log.Warn("cannot read the topics' delete.retention.ms for the tombstone horizon; retrying", "err", err)
		if !b.wait(ctx) {
			return
		}
	}
	s.log.Info("tombstones of deleted rows expire", "after", horizon)
	t := time.NewTicker(min(max(horizon/4, 100*time.Millisecond), 10*time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := s.sweep(ctx, horizon)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log.Warn("dropping expired tombstones failed; trying again later", "err", err)
		} else if n > 0 {
			s.log.Debug("dropped expired tombstones", "count", n)
		}
	}
}

// horizon is CDCSYNC_TOMBSTONE_RETENTION, or the largest delete.retention.ms
// of the sink's topics (Kafka's default, 24h, where a topic does not set
// it).
func (s *tombstoneSweeper) horizon() (time.Duration, error) {
	if s.cfg.TombstoneRetention > 0 {
		return s.cfg.TombstoneRetention, nil
	}
	sc, err := kafkaclient.Config(s.cfg.Kafka)
	if err != nil {
		return 0, err
	}
	client, err := kafkaclient.NewClient(s.cfg.Kafka, sc)
	if err != nil {
		return 0, err
	}
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		client.Close()
		return 0, fmt.Errorf("kafka admin: %w", err)
	}
	defer admin.Close() // closes client
	horizon := 24 * time.Hour
	for _, topic := range s.topics {
		entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic, ConfigNames: []string{"delete.retention.ms"}})
		if err != nil {
			return 0, fmt.Errorf("delete.retention.ms of %s: %w", topic, err)
		}
		for _, e := range entries {
			if ms, err := strconv.ParseInt(e.Value, 10, 64); e.Name == "delete.retention.ms" && err == nil && ms > 0 {
				horizon = max(horizon, time.Duration(ms)*time.Millisecond)
			}
		}
	}
	return horizon, nil
}

// sweepProjection deletes projection rows of orders deleted longer than
// horizon ago (and placeholders no event ever replaced), tombstoneChunk
// per statement.
func (a *inventory) sweepProjection(ctx context.Context, horizon time.Duration) (int64, error) {
	var total int64
	for {
		tag, err := a.pool.Exec(ctx, sqlSweepTombstones, horizon, tombstoneChunk)
		if err != nil {
			return total, fmt.Errorf("inventory drop expired tombstones: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < tombstoneChunk {
			return total, nil
		}
	}
}

// tombstoneChunk bounds one sweep statement or pipeline.
const tombstoneChunk = 1000

//go:embed expire.lua
var expireLua string

// versionSweeper expires the row cache's tombstones.
type versionSweeper struct {
	rdb    redis.UniversalClient
	script *redis.Script
	tables []string // schema.table
}

func newVersionSweeper(rdb redis.UniversalClient, tables []string) *versionSweeper {
	return &versionSweeper{rdb: rdb, script: redis.NewScript(expireLua), tables: tables}
}

// sweep gives the version key of every deleted row of the cached tables an
// expiry of horizon, if it has none yet; the key then goes once the horizon
// has passed since the sweep saw the row deleted.
func (c *versionSweeper) sweep(ctx context.Context, horizon time.Duration) (int64, error) {
	var total int64
	for _, table := range c.tables {
		pattern := versionPrefix + escapeGlob(table) + ":*"
		iter := c.rdb.Scan(ctx, 0, pattern, tombstoneChunk).Iterator()
		var keys []string
		flush := func() error {
			err := runScripts(ctx, c.rdb, c.script, len(keys), func(pipe redis.Pipeliner, i int) *redis.Cmd {
				row := rowPrefix + strings.TrimPrefix(keys[i], versionPrefix)
				return c.script.EvalSha(ctx, pipe, []string{row, keys[i]}, horizon.Milliseconds())
			}, func(_ int, cmd *redis.Cmd) error {
				n, err := cmd.Int64()
				total += n
				return err
			})
			keys = keys[:0]
			return err
		}
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
			if len(keys) == tombstoneChunk {
				if err := flush(); err != nil {
					return total, fmt.Errorf("row cache expire tombstones: %w", err)
				}
			}
		}
		if err := iter.Err(); err != nil {
			return total, fmt.Errorf("row cache scan versions: %w", err)
		}
		if err := flush(); err != nil {
			return total, fmt.Errorf("row cache expire tombstones: %w", err)
		}
	}
	return total, nil
}

package sink

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

// AppliedKey is the Redis key holding a sink's applied-through LSN, as
// Postgres prints it: cdcsync:applied:redis for the row cache and
// cdcsync:applied:inventory for the availability cache.
func AppliedKey(sink string) string { return "cdcsync:applied:" + sink }

// AppliedTable is the inventory store's table of applied-through
// positions: one row per sink (sink text primary key, lsn pg_lsn,
// updated_at timestamptz, source_time timestamptz).
const AppliedTable = "cdcsync_applied"

//go:embed applied.lua
var appliedLua string

// appliedScript records watermarks in Redis (applied.lua).
var appliedScript = redis.NewScript(appliedLua)

// redisApplied keeps a sink's applied-through position in Redis.
type redisApplied struct {
	rdb    redis.UniversalClient
	sink   string
	topics []string // every topic the sink follows
	// epoch, when set, must still be Redis's for a position to be
	// recorded: the row cache tells a deleted row by its absence, so after
	// a loss nothing may claim rows visible until the sink rebuilt them.
	// (The availability cache has none: a lost item is absent, never
	// stale, and refreshes only ever write the store's committed values.)
	epoch *redisEpoch
}

// record stores mark after the data it covers was written, and returns
// the sink's applied-through position in Redis.
func (r *redisApplied) record(ctx context.Context, mark *partitionMark) (Applied, error) {
	key := AppliedKey(r.sink)
	keys := []string{key, key + ":partitions", key + ":source_ts"}
	epoch := ""
	if r.epoch != nil {
		keys, epoch = append(keys, r.epoch.key), r.epoch.current()
	}
	args := make([]any, 0, 5+len(r.topics))
	args = append(args, mark.Topic+"/"+strconv.Itoa(int(mark.Partition)), hexPosition(mark.EpochLSN()),
		mark.AsOf.UnixMilli(), mark.Partitions, epoch)
	for _, t := range r.topics {
		args = append(args, t)
	}
	var out Applied
	err := runScripts(ctx, r.rdb, appliedScript, 1, func(pipe redis.Pipeliner, _ int) *redis.Cmd {
		return appliedScript.EvalSha(ctx, pipe, keys, args...)
	}, func(_ int, cmd *redis.Cmd) error {
		if n, err := cmd.Int64(); err == nil && n == epochReply {
			return fmt.Errorf("redis record applied position of %s: %w", r.sink, errRedisLost)
		}
		res, err := cmd.Slice()
		if err != nil {
			return fmt.Errorf("redis record applied position of %s: %w", r.sink, err)
		}
		out, err = parseRedisApplied(res)
		return err
	})
	return out, err
}

// parseRedisApplied reads applied.lua's reply {lsn or nil, ms or nil}.
func parseRedisApplied(res []any) (Applied, error) {
	var a Applied
	if len(res) < 1 || res[0] == nil {
		return a, nil
	}
	s, _ := res[0].(string)
	pos, err := pipeline.ParseEpochLSN(s)
	if err != nil {
		return a, fmt.Errorf("applied position %q in Redis: %w", s, err)
	}
	a.EpochLSN = pos
	if len(res) > 1 && res[1] != nil {
		ts, _ := res[1].(string)
		if ms, err := strconv.ParseInt(ts, 10, 64); err == nil {
			a.AsOf = time.UnixMilli(ms)
		}
	}
	return a, nil
}

// hexPosition renders pos as 24 upper-case hex digits (epoch, then the
// LSN), the form applied.lua compares byte by byte.
func hexPosition(pos pipeline.EpochLSN) string {
	return fmt.Sprintf("%08X%08X%08X", pos.Epoch, uint32(pos.LSN>>32), uint32(pos.LSN))
}

// The inventory store's applied-through positions. A batch with a
// watermark records its partition's LSN, then locks the sink's row and
// recomputes the lowest LSN over every partition of the followed topics
// (once each has one). The lock serialises the recomputation between
// transactions, and each statement of READ COMMITTED sees the rows
// committed before it started: the last transaction to take the lock sees
// every partition's latest watermark, so the position is never left
// behind by a race, and never ahead, since it commits with the data.
const (
	sqlEnsureApplied = `INSERT INTO cdcsync_applied (sink, lsn, updated_at) VALUES ($1, '0/0', now())
		ON CONFLICT DO NOTHING`

	sqlRecordPartition = `INSERT INTO cdcsync_applied_partitions AS p
			(sink, topic, partition, partitions, epoch, lsn, source_time)
		VALUES ($1, $2, $3, $4, $7, $5::pg_lsn, $6)
		ON CONFLICT (sink, topic, partition) DO UPDATE SET
			partitions = excluded.partitions, epoch = excluded.epoch, lsn = excluded.lsn, source_time = excluded.source_time
		WHERE (excluded.epoch, excluded.lsn) > (p.epoch, p.lsn)`

	sqlLockApplied = `SELECT 1 FROM cdcsync_applied WHERE sink = $1 FOR UPDATE`

	// The lowest (epoch, lsn) over every partition of every topic, once
	// each has a watermark; a newer epoch is later whatever its LSN.
	sqlAdvanceApplied = `WITH per AS (
			SELECT topic, min(source_time) AS ts,
				count(*) FILTER (WHERE partition < partitions) AS have, max(partitions) AS want
			FROM cdcsync_applied_partitions WHERE sink = $1 AND topic = ANY($2) GROUP BY topic),
		complete AS (
			SELECT min(ts) AS ts FROM per
			HAVING count(*) = cardinality($2) AND bool_and(have = want)),
		lowest AS (
			SELECT p.epoch, p.lsn, complete.ts FROM cdcsync_applied_partitions p, complete
			WHERE p.sink = $1 AND p.topic = ANY($2)
			ORDER BY p.epoch, p.lsn LIMIT 1)
		UPDATE cdcsync_applied a SET epoch = lowest.epoch, lsn = lowest.lsn, source_time = lowest.ts, updated_at = now()
		FROM lowest WHERE a.sink = $1 AND (lowest.epoch, lowest.lsn) > (a.epoch, a.lsn)`

	sqlReadApplied = `SELECT epoch, lsn::text, source_time FROM cdcsync_applied WHERE sink = $1`
)

// recordApplied stores mark in tx and returns the sink's applied-through
// position as it will be once tx commits, in one round trip: capture
// writes watermarks every few milliseconds, so nearly every batch of a
// live sink carries one.
func recordApplied(ctx context.Context, tx pgx.Tx, sink string, topics []string, mark *partitionMark) (Applied, error) {
	b := &pgx.Batch{}
	b.Queue(sqlRecordPartition, sink, mark.Topic, mark.Partition, mark.Partitions, mark.LSN.String(), mark.AsOf, int64(mark.Epoch))
	b.Queue(sqlLockApplied, sink)
	b.Queue(sqlAdvanceApplied, sink, topics)
	b.Queue(sqlReadApplied, sink)
	res := tx.SendBatch(ctx, b)
	var errs []error
	for range 3 {
		_, err := res.Exec()
		errs = append(errs, err)
	}
	a, err := scanApplied(res.QueryRow())
	errs = append(errs, err, res.Close())
	if err := errors.Join(errs...); err != nil {
		return Applied{}, fmt.Errorf("inventory record applied position: %w", err)
	}
	return a, nil
}

// read returns the sink's applied-through position in Redis.
func (r *redisApplied) read(ctx context.Context) (Applied, error) {
	// Two GETs rather than MGET: the documented ACL grants GET.
	key := AppliedKey(r.sink)
	pipe := r.rdb.Pipeline()
	lsn, ts := pipe.Get(ctx, key), pipe.Get(ctx, key+":source_ts")
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Applied{}, fmt.Errorf("redis read applied position of %s: %w", r.sink, err)
	}
	vals := make([]any, 2)
	for i, c := range []*redis.StringCmd{lsn, ts} {
		if v, err := c.Result(); err == nil {
			vals[i] = v
		}
	}
	return parseRedisApplied(vals)
}

// readApplied returns the inventory store's applied-through position.
func readApplied(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, sink string) (Applied, error) {
	a, err := scanApplied(q.QueryRow(ctx, sqlReadApplied, sink))
	if err != nil {
		return Applied{}, fmt.Errorf("inventory read applied position: %w", err)
	}
	return a, nil
}

// scanApplied reads sqlReadApplied's row; no row is no position yet.
func scanApplied(row pgx.Row) (Applied, error) {
	var (
		epoch int64
		lsn   string
		asOf  *time.Time
	)
	err := row.Scan(&epoch, &lsn, &asOf)
	if errors.Is(err, pgx.ErrNoRows) {
		return Applied{}, nil
	}
	if err != nil {
		return Applied{}, err
	}
	p, err := pglogrepl.ParseLSN(lsn)
	if err != nil {
		return Applied{}, fmt.Errorf("applied position %q: %w", lsn, err)
	}
	a := Applied{EpochLSN: pipeline.EpochLSN{Epoch: uint32(epoch), LSN: p}}
	if asOf != nil {
		a.AsOf = *asOf
	}
	return a, nil
}

// readApplied is the inventory sink's applied-through position: the
// lower of the inventory store's and the availability cache's.
func (a *inventory) readApplied(ctx context.Context) (Applied, error) {
	stored, err := readApplied(ctx, a.pool, config.SinkInventory)
	if err != nil || a.availApplied == nil {
		return stored, err
	}
	cached, err := a.availApplied.read(ctx)
	return lowest(stored, cached), err
}

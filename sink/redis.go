package sink

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

// Redis key prefixes of the row cache. A row of schema.table with primary
// key values v1, v2 is the hash cdc:schema.table:v1:v2 (DESIGN.md); its
// version and the table's truncate watermark live beside it, so that the
// hash holds the row's columns and nothing else.
const (
	rowPrefix      = "cdc:"
	versionPrefix  = "cdcver:"
	truncatePrefix = "cdctrunc:"
)

// RowKey is the Redis key of a row in the row cache.
func RowKey(schema, table string, key pipeline.Row) string {
	return rowPrefix + schema + "." + table + ":" + pipeline.KeyString(key)
}

//go:embed apply.lua
var applyLua string

// rowCache applies change events to the Redis row cache. Each row is a
// hash of its columns: strings as they are, other values as their JSON
// text (numbers, booleans, JSON documents, arrays), NULL columns absent.
// Unchanged TOASTed columns keep their cached value.
//
// Every event goes through apply.lua, which compares the event's position
// with the row's version inside Redis, so the check and the write are one
// atomic step even with several sink processes.
type rowCache struct {
	rdb    redis.UniversalClient
	script *redis.Script
	// applied keeps the row cache's applied-through position; nil when
	// it is not kept (replay).
	applied *redisApplied
	// epoch is the Redis data epoch every script call must find (see
	// EpochKey); loaded by the store's setup.
	epoch *redisEpoch
}

var _ throughApplier = (*rowCache)(nil)

// ApplyThrough implements throughApplier: the batch's rows first, then
// (once Redis has answered for them) mark, so the position is never ahead
// of them.
func (c *rowCache) ApplyThrough(ctx context.Context, batch []*Message, mark *partitionMark) (Applied, error) {
	if err := c.Apply(ctx, batch); err != nil || mark == nil || c.applied == nil {
		return Applied{}, err
	}
	return c.applied.record(ctx, mark)
}

func newRowCache(rdb redis.UniversalClient) *rowCache {
	return &rowCache{rdb: rdb, script: redis.NewScript(applyLua), epoch: newRedisEpoch(rdb, config.SinkRedis)}
}

// withEpoch inserts the epoch the script must find in Redis after the
// op and the position.
func withEpoch(args []any, epoch string) []any {
	out := make([]any, 0, len(args)+1)
	return append(append(append(out, args[:2]...), epoch), args[2:]...)
}

// rowCall is one script call of a batch.
type rowCall struct {
	msg  *Message
	keys []string
	args []any
}

// Apply implements Applier. A batch runs as pipelines of script calls,
// split at truncates, which need a scan of the table's keys in between.
func (c *rowCache) Apply(ctx context.Context, batch []*Message) error {
	var run []*Message
	for _, m := range batch {
		m.Skip = ""
		if m.Event.Op != pipeline.OpTruncate {
			run = append(run, m)
			continue
		}
		if err := c.applyRows(ctx, run); err != nil {
			return err
		}
		run = nil
		if err := c.truncate(ctx, m); err != nil {
			return err
		}
	}
	return c.applyRows(ctx, run)
}

// applyRows applies row events in one pipeline. An event followed in the
// batch by a full image (or a delete) of the same row is superseded and
// not sent: the later event alone gives the same result, whatever the
// stored version. Events with unchanged TOASTed columns are not full
// images: they need the value before them.
func (c *rowCache) applyRows(ctx context.Context, msgs []*Message) error {
	if len(msgs) == 0 {
		return nil
	}
	ops := make([]rowOp, 0, len(msgs))
	for _, m := range msgs {
		ops = appendRowOps(ops, m)
	}
	epoch := c.epoch.current()
	// A full write supersedes the key's earlier writes of the batch that
	// are older by position. Not by offset alone: a late event older than
	// one before it on the partition (a late update after a delete) must
	// not hide the newer one, which the script then finds and refuses it.
	sealed := make(map[string]pipeline.Position, len(ops))
	calls := make([]rowCall, 0, len(ops))
	for i := len(ops) - 1; i >= 0; i-- {
		op := ops[i]
		pos := op.msg.Event.Position()
		if seal, ok := sealed[op.key]; ok && pos.Less(seal) {
			continue
		}
		if seal, ok := sealed[op.key]; op.full && (!ok || seal.Less(pos)) {
			sealed[op.key] = pos
		}
		calls = append(calls, rowCall{msg: op.msg, keys: c.rowKeys(op.key, op.msg.Event), args: withEpoch(op.args, epoch)})
	}
	// Collected backwards; apply forwards.
	slices.Reverse(calls)
	for _, m := range msgs {
		m.Skip = skipSuperseded // until one of its calls says otherwise
	}
	applied := make(map[*Message]bool, len(calls))
	return runScripts(ctx, c.rdb, c.script, len(calls), func(pipe redis.Pipeliner, i int) *redis.Cmd {
		return c.script.EvalSha(ctx, pipe, calls[i].keys, calls[i].args...)
	}, func(i int, cmd *redis.Cmd) error {
		m := calls[i].msg
		res, err := cmd.Int64()
		switch {
		case err == nil && res == epochReply:
			return fmt.Errorf("redis apply %s: %w", calls[i].keys[0], errRedisLost)
		case err != nil && !messageRedisError(err):
			// A condition of the store (down, not authenticated, no
			// permission, out of memory, a key of the wrong type in our
			// namespace...): stall and retry, whatever the message.
			return fmt.Errorf("redis apply %s: %w", calls[i].keys[0], err)
		case err != nil:
			// The server refused this message's own arguments: no retry
			// will change that.
			m.Err = permanentf("redis apply %s: %v", calls[i].keys[0], err)
		case res == 1:
			applied[m] = true
			m.Skip = ""
		case applied[m]:
		case res == 0:
			m.Skip = skipStale
		case res == 2:
			m.Skip = skipTruncated
		}
		return nil
	})
}

// rowOp is one row change for the script: a message usually makes one,
// an update of the primary key two (a delete of the old key first).
type rowOp struct {
	msg  *Message
	key  string
	full bool // a full image or a delete: earlier ops on key do not matter
	args []any
}

func appendRowOps(ops []rowOp, m *Message) []rowOp {
	ev := m.Event
	key := RowKey(ev.Source.Schema, ev.Source.Table, m.Key)
	if ev.Op == pipeline.OpUpdate && ev.Before != nil {
		// Before holds at least the old key columns when the key changed.
		old := make(pipeline.Row, 0, len(m.Key))
		for _, kc := range m.Key {
			if v, ok := ev.Before.Get(kc.Name); ok {
				old = append(old, pipeline.Column{Name: kc.Name, Value: v})
			}
		}
		if len(old) == len(m.Key) {
			if oldKey := RowKey(ev.Source.Schema, ev.Source.Table, old); oldKey != key {
				ops = append(ops, rowOp{msg: m, key: oldKey, full: true,
					args: []any{string(pipeline.OpDelete), positionKey(ev.Position()), 0}})
			}
		}
	}
	return append(ops, rowOp{msg: m, key: key, full: ev.Op == pipeline.OpDelete || len(ev.Unchanged) == 0, args: rowArgs(ev)})
}

// rowKeys returns the script's keys for a row event: row hash, version,
// table truncate watermark, epoch.
func (c *rowCache) rowKeys(rowKey string, ev *pipeline.Event) []string {
	rest := strings.TrimPrefix(rowKey, rowPrefix)
	return []string{rowKey, versionPrefix + rest, truncatePrefix + ev.Source.Schema + "." + ev.Source.Table, c.epoch.key}
}

func rowArgs(ev *pipeline.Event) []any {
	args := make([]any, 0, 3+len(ev.Unchanged)+2*len(ev.After))
	args = append(args, string(ev.Op), positionKey(ev.Position()), len(ev.Unchanged))
	for _, u := range ev.Unchanged {
		args = append(args, u)
	}
	if ev.Op == pipeline.OpDelete {
		return args
	}
	for _, col := range ev.After {
		if isNull(col.Value) {
			continue
		}
		args = append(args, col.Name, scalarText(col.Value))
	}
	return args
}

// scalarText is pipeline.ScalarText without a JSON decode for the common
// string without escapes.
func scalarText(v []byte) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' && !strings.ContainsRune(string(v[1:len(v)-1]), '\\') {
		return string(v[1 : len(v)-1])
	}
	return pipeline.ScalarText(v)
}

// truncate moves the table's watermark to the truncate's position (if
// newer), then sweeps the table's rows older than the watermark. The sweep
// runs even for a stale truncate: a crash may have cut the first one short.
func (c *rowCache) truncate(ctx context.Context, m *Message) error {
	table := m.Event.Source.Schema + "." + m.Event.Source.Table
	watermark := truncatePrefix + table
	epoch := c.epoch.current()
	err := runScripts(ctx, c.rdb, c.script, 1, func(pipe redis.Pipeliner, _ int) *redis.Cmd {
		return c.script.EvalSha(ctx, pipe, []string{watermark, c.epoch.key}, string(pipeline.OpTruncate), positionKey(m.Event.Position()), epoch)
	}, func(_ int, cmd *redis.Cmd) error {
		res, err := cmd.Int64()
		if err != nil {
			return fmt.Errorf("redis truncate %s: %w", table, err)
		}
		if res == epochReply {
			return fmt.Errorf("redis truncate %s: %w", table, errRedisLost)
		}
		if res == 0 {
			m.Skip = skipStale
		}
		return nil
	})
	if err != nil {
		return err
	}
	pattern := escapeGlob(versionPrefix+table+":") + "*"
	iter := c.rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	var versions []string
	flush := func() error {
		if len(versions) == 0 {
			return nil
		}
		err := runScripts(ctx, c.rdb, c.script, len(versions), func(pipe redis.Pipeliner, i int) *redis.Cmd {
			row := rowPrefix + strings.TrimPrefix(versions[i], versionPrefix)
			return c.script.EvalSha(ctx, pipe, []string{row, versions[i], watermark, c.epoch.key}, "x", "", epoch)
		}, func(_ int, cmd *redis.Cmd) error {
			res, err := cmd.Int64()
			if err != nil {
				return fmt.Errorf("redis truncate sweep %s: %w", table, err)
			}
			if res == epochReply {
				return fmt.Errorf("redis truncate sweep %s: %w", table, errRedisLost)
			}
			return nil
		})
		versions = versions[:0]
		return err
	}
	for iter.Next(ctx) {
		versions = append(versions, iter.Val())
		if len(versions) == 1000 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("redis truncate scan %s: %w", table, err)
	}
	return flush()
}

// RowKeyPattern is the SCAN MATCH pattern of every row-cache key of a
// table (verify and the truncate scan both use it).
func RowKeyPattern(schema, table string) string {
	return escapeGlob(RowKey(schema, table, nil)) + "*"
}

// escapeGlob quotes the glob metacharacters of s for SCAN MATCH.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// runScripts runs n calls of script (made by add) in one pipeline and hands
// each result to check; the first error check returns is returned. When
// Redis has lost its script cache (it restarted), the script is loaded
// again and the pipeline rerun: every call is idempotent. A connection
// failure is returned as is, for the caller to retry.
func runScripts(ctx context.Context, rdb redis.UniversalClient, script *redis.Script, n int,
	add func(pipe redis.Pipeliner, i int) *redis.Cmd, check func(i int, cmd *redis.Cmd) error) error {
	if n == 0 {
		return nil
	}
	for attempt := 0; ; attempt++ {
		pipe := rdb.Pipeline()
		cmds := make([]*redis.Cmd, n)
		for i := range n {
			cmds[i] = add(pipe, i)
		}
		_, err := pipe.Exec(ctx)
		var replyErr redis.Error
		if err != nil && !errors.As(err, &replyErr) {
			return fmt.Errorf("redis pipeline: %w", err)
		}
		if attempt == 0 && anyNoScript(cmds) {
			if err := script.Load(ctx, rdb).Err(); err != nil {
				return fmt.Errorf("redis load script: %w", err)
			}
			continue
		}
		for i, cmd := range cmds {
			if err := check(i, cmd); err != nil {
				return err
			}
		}
		return nil
	}
}

func anyNoScript(cmds []*redis.Cmd) bool {
	for _, c := range cmds {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			return true
		}
	}
	return false
}

// messageRedisError reports whether a Redis error is about the message
// itself, so that it goes to the dead-letter topic: the server refused the
// size or number of the arguments the message made. Every other error is
// the store's condition and is retried with the sink stalled and not
// ready, for good messages must never be dead-lettered because of Redis:
// connection failures, NOAUTH and WRONGPASS (a restart with requirepass),
// NOPERM (ACLs), MOVED/ASK/CROSSSLOT (a cluster where a single node was
// configured), OOM (Redis < 7 reports it from a script as "ERR Error
// running script ... OOM"), LOADING, READONLY, MASTERDOWN, BUSY,
// MISCONF, WRONGTYPE (someone else's key in our namespace: whoever
// repairs it unblocks the sink) and anything not known to be the
// message's.
func messageRedisError(err error) bool {
	var replyErr redis.Error
	if !errors.As(err, &replyErr) {
		return false
	}
	msg := replyErr.Error()
	for _, s := range []string{
		"string exceeds maximum allowed size", // proto-max-bulk-len
		"invalid bulk length",
		"too many results to unpack", // more columns than Lua's stack takes
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

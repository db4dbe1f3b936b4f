package verify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/consistency"
	"github.com/cdcsync/cdcsync/pipeline"
	"github.com/cdcsync/cdcsync/sink"
)

// A consistent cut makes verify exact while the pipeline runs. The order
// database is read on a snapshot that holds exactly the transactions
// committed before the cut's LSN S: the snapshot a temporary logical
// replication slot exports, whose consistent point is S (a transaction
// whose commit record starts at or after S is not in it; capture's own
// initial snapshot relies on the same). pg_current_wal_lsn() read inside an
// ordinary snapshot would not do: a transaction can have written its
// commit record before that LSN and still be invisible to the snapshot.
// Verify then waits until every compared store has applied S (its
// applied-through position, DESIGN.md "Read-your-writes"), so that every
// change in the snapshot is in the stores, and compares. A store may hold
// changes committed at or after S too; those are recognised by their
// positions (the row cache's version keys, the inventory projection) and
// not counted as drift: only what differs and was not changed after S is.

// cut is the order database's side of a consistent cut: a REPEATABLE READ
// transaction on the exported snapshot.
type cut struct {
	// pos is S with the source epoch a change committed at S is captured
	// in (consistency.SourceEpoch): after a failover the new primary's
	// LSNs may be below those the stores hold from the old one.
	pos  pipeline.EpochLSN
	conn *pgxpool.Conn
}

// takeCut creates a temporary slot to export a snapshot, imports it into
// a transaction on a pooled connection, and drops the slot again (closing
// the replication connection does): the transaction keeps its snapshot.
func (v *Verifier) takeCut(ctx context.Context) (*cut, error) {
	rc, err := pgconn.ParseConfig(v.cfg.SourceURL)
	if err != nil {
		return nil, &config.Error{Var: config.Prefix + "_SOURCE_URL", Problem: "is not a usable postgres connection string"}
	}
	rc.RuntimeParams["replication"] = "database"
	repl, err := pgconn.ConnectConfig(ctx, rc)
	if err != nil {
		return nil, fmt.Errorf("consistent cut: open a replication connection to the order database: %w", err)
	}
	defer repl.Close(context.Background())
	var b [6]byte
	_, _ = rand.Read(b[:])
	slot := "cdcsync_verify_" + hex.EncodeToString(b[:])
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, pgx.Identifier{slot}.Sanitize(), "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Temporary: true, SnapshotAction: "EXPORT_SNAPSHOT", Mode: pglogrepl.LogicalReplication})
	if err != nil {
		return nil, fmt.Errorf("consistent cut: create temporary slot (the role needs REPLICATION and a free replication slot; "+
			"CDCSYNC_VERIFY_CUT_WAIT=0 compares without a cut): %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return nil, fmt.Errorf("consistent cut: consistent point %q: %w", res.ConsistentPoint, err)
	}
	conn, err := v.src.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("consistent cut: connect to the order database: %w", err)
	}
	// Read after S: an epoch raised since only makes the wait longer.
	epoch, err := consistency.SourceEpoch(ctx, v.src, consistency.WithSlot(v.cfg.Slot), consistency.WithStateSchema(v.cfg.StateSchema))
	if err != nil {
		conn.Release()
		return nil, fmt.Errorf("consistent cut: %w", err)
	}
	c := &cut{pos: pipeline.EpochLSN{Epoch: epoch, LSN: lsn}, conn: conn}
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		c.close()
		return nil, fmt.Errorf("consistent cut: begin: %w", err)
	}
	if _, err := conn.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(res.SnapshotName)); err != nil {
		c.close()
		return nil, fmt.Errorf("consistent cut: import snapshot: %w", err)
	}
	return c, nil
}

// close ends the transaction and returns the connection to the pool.
func (c *cut) close() {
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.conn.Exec(ctx, "ROLLBACK"); err != nil {
		// A connection in an unknown state must not go back to the pool.
		_ = c.conn.Conn().Close(ctx)
	}
	c.conn.Release()
}

// after reports whether a change at pos is after the cut: in a newer
// source epoch, or in the cut's at or after S.
func (c *cut) after(pos pipeline.Position) bool {
	return !pipeline.EpochLSN{Epoch: pos.Epoch, LSN: pos.Commit}.Less(c.pos)
}

// quoteLiteral quotes s as an SQL string literal (standard_conforming_strings
// is on in every supported Postgres).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// appliedPosition is one store's applied-through position.
type appliedPosition struct {
	store string // as shown in messages
	read  func(context.Context) (pglogrepl.LSN, bool, error)
	wait  func(context.Context, consistency.Token, time.Duration) error
}

// appliedPositions lists the applied-through positions of the stores this
// verification compares: the inventory store's cdcsync_applied row, and
// Redis's cdcsync:applied:inventory (availability cache) and
// cdcsync:applied:redis (row cache).
func (v *Verifier) appliedPositions() []appliedPosition {
	var out []appliedPosition
	if v.cfg.Has(config.SinkInventory) {
		out = append(out, appliedPosition{store: "inventory store (cdcsync_applied)", read: v.inventoryApplied,
			wait: func(ctx context.Context, tok consistency.Token, timeout time.Duration) error {
				return consistency.WaitInventory(ctx, v.inv, tok, timeout)
			}})
		if v.availabilityChecked() {
			out = append(out, v.redisApplied(config.SinkInventory))
		}
	}
	if v.cfg.Has(config.SinkRedis) {
		out = append(out, v.redisApplied(config.SinkRedis))
	}
	return out
}

func (v *Verifier) inventoryApplied(ctx context.Context) (pglogrepl.LSN, bool, error) {
	var s string
	err := v.inv.QueryRow(ctx, `SELECT lsn::text FROM cdcsync_applied WHERE sink = 'inventory'`).Scan(&s)
	switch {
	case errors.Is(err, pgx.ErrNoRows), isUndefinedTable(err):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("read cdcsync_applied: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	return lsn, err == nil, err
}

func (v *Verifier) redisApplied(sink string) appliedPosition {
	key := "cdcsync:applied:" + sink
	return appliedPosition{store: "Redis (" + key + ")", read: func(ctx context.Context) (pglogrepl.LSN, bool, error) {
		s, err := v.rdb.Get(ctx, key).Result()
		if errors.Is(err, redis.Nil) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, fmt.Errorf("read %s: %w", key, err)
		}
		tok, err := consistency.ParseToken(s)
		if err != nil {
			return 0, false, fmt.Errorf("read %s: %w", key, err)
		}
		return tok.LSN, true, nil
	}, wait: func(ctx context.Context, tok consistency.Token, timeout time.Duration) error {
		return consistency.WaitRedis(ctx, v.rdb, sink, tok, timeout)
	}}
}

// positionsKept reports whether every compared store keeps an
// applied-through position; when one does not, why.
func (v *Verifier) positionsKept(ctx context.Context) (bool, string, error) {
	for _, p := range v.appliedPositions() {
		_, ok, err := p.read(ctx)
		if err != nil {
			return false, "", err
		}
		if !ok {
			return false, p.store + " keeps no applied-through position", nil
		}
	}
	return true, "", nil
}

// waitApplied waits until every compared store has applied pos, up to
// CDCSYNC_VERIFY_CUT_WAIT in all.
func (v *Verifier) waitApplied(ctx context.Context, pos pipeline.EpochLSN) error {
	deadline := time.Now().Add(v.cfg.CutWait)
	lsn := consistency.Token{Epoch: pos.Epoch, LSN: pos.LSN}
	for _, p := range v.appliedPositions() {
		if err := p.wait(ctx, lsn, max(time.Until(deadline), time.Millisecond)); err != nil {
			if errors.Is(err, consistency.ErrTimeout) {
				return fmt.Errorf("consistent cut %s: %w (is the pipeline running? CDCSYNC_VERIFY_CUT_WAIT=0 compares without a cut)", lsn, err)
			}
			return fmt.Errorf("consistent cut %s: %w", lsn, err)
		}
	}
	return nil
}

// changedAfter reports whether a row's version (a GET of its version key)
// says it was changed after the cut.
func changedAfter(c *cut, version *redis.StringCmd) (bool, error) {
	s, err := version.Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read row version: %w", err)
	}
	pos, err := sink.ParsePositionKey(s)
	if err != nil {
		// Not a position: not in flight, and reported as drift by the
		// version check (versionField).
		return false, nil
	}
	return c.after(pos), nil
}

// notChangedAfter drops from keys (hashes without a source row at the cut)
// those created after the cut, counting them in ch.AfterCut.
func (v *Verifier) notChangedAfter(ctx context.Context, c *cut, ch *Check, keys []string) ([]string, error) {
	if len(keys) == 0 {
		return keys, nil
	}
	pipe := v.rdb.Pipeline()
	versions := make([]*redis.StringCmd, len(keys))
	for i, k := range keys {
		versions[i] = pipe.Get(ctx, sink.VersionKeyOfRow(k))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read row versions: %w", err)
	}
	var out []string
	for i, k := range keys {
		after, err := changedAfter(c, versions[i])
		if err != nil {
			return nil, err
		}
		if after {
			ch.AfterCut++
			continue
		}
		out = append(out, k)
	}
	return out, nil
}

// Package consistency lets a writer read its own writes through cdcsync:
// after its COMMIT it takes a Token (a WAL position at or after its commit
// record), then waits until a store says it has applied everything up to
// that position (the store's applied-through position, DESIGN.md
// "Read-your-writes") before reading from it.
//
//	tx.Commit(ctx)
//	tok, err := consistency.TakeToken(ctx, pool)
//	err = consistency.WaitRedis(ctx, rdb, consistency.SinkInventory, tok, time.Second)
//	if errors.Is(err, consistency.ErrTimeout) { /* not visible yet: do not read a stale value */ }
//
// A wait that times out is an error, never a silent stale read.
package consistency

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// Sink names, as CDCSYNC_SINKS spells them. In Redis, SinkRedis is the row
// cache and SinkInventory the availability cache.
const (
	SinkInventory = "inventory"
	SinkRedis     = "redis"
)

// Token is a position in the order database's WAL at or after a writer's
// commit: once a store has applied it, the writer's change is visible
// there.
type Token pglogrepl.LSN

// String renders t as Postgres prints an LSN (0/16B3748).
func (t Token) String() string { return pglogrepl.LSN(t).String() }

// ParseToken reads the String form.
func ParseToken(s string) (Token, error) {
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		return 0, fmt.Errorf("parse token: %w", err)
	}
	return Token(lsn), nil
}

// Querier runs a query returning one row: *pgx.Conn, *pgxpool.Pool and
// pgx.Tx all are.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// TakeToken returns the token of everything q's session has committed.
// Call it right after COMMIT, on the connection (or pool) that committed.
func TakeToken(ctx context.Context, q Querier) (Token, error) {
	var s string
	if err := q.QueryRow(ctx, sqlToken).Scan(&s); err != nil {
		return 0, fmt.Errorf("take read-your-writes token: %w", err)
	}
	return ParseToken(s)
}

// sqlToken is the position a committed transaction is certainly covered
// by. With synchronous_commit on (or local, remote_write, remote_apply)
// COMMIT returns after its record is flushed, so the WAL write position
// is past it; with synchronous_commit off the record may not be written
// yet, and only the insert position is certainly past it.
const sqlToken = `SELECT (CASE WHEN current_setting('synchronous_commit') = 'off'
	THEN pg_current_wal_insert_lsn() ELSE pg_current_wal_lsn() END)::text`

// ErrTimeout is matched (errors.Is) by every wait that ran out of time
// before the store applied the token.
var ErrTimeout = errors.New("consistency: timed out before the change was applied")

// TimeoutError says which store did not apply which token in time, and
// how far it had got.
type TimeoutError struct {
	Store   string // "redis inventory", "inventory store", or the /applied URL
	Token   Token
	Applied Token // the store's applied-through position at the last look (0: none)
	Waited  time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("consistency: %s did not apply %s within %v (applied through %s)", e.Store, e.Token, e.Waited.Round(time.Millisecond), e.Applied)
}

// Is makes errors.Is(err, ErrTimeout) true.
func (e *TimeoutError) Is(target error) bool { return target == ErrTimeout }

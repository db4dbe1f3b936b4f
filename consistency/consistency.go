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
	"strconv"
	"strings"
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
// commit, with the source epoch the commit is captured in: once a store
// has applied it, the writer's change is visible there.
//
// After a failover (or a restore, or an invalidated slot) capture streams
// the new primary in a new source epoch, whose LSNs may be below those
// the stores already hold: a store has applied a token only once it is in
// the token's epoch at or past its LSN, or in a newer epoch.
type Token struct {
	Epoch uint32
	LSN   pglogrepl.LSN
}

// String renders t as Postgres prints an LSN (0/16B3748), after
// "<epoch>@" when the epoch is not 0 (1795600000@0/16B3748): the form of
// the stores' applied-through positions and of GET /applied?lsn=.
func (t Token) String() string {
	if t.Epoch == 0 {
		return t.LSN.String()
	}
	return strconv.FormatUint(uint64(t.Epoch), 10) + "@" + t.LSN.String()
}

// ParseToken reads the String form (a bare LSN is in epoch 0).
func ParseToken(s string) (Token, error) {
	var tok Token
	lsnText := s
	if e, rest, ok := strings.Cut(s, "@"); ok {
		n, err := strconv.ParseUint(e, 10, 32)
		if err != nil {
			return Token{}, fmt.Errorf("parse token %q: source epoch: %w", s, err)
		}
		tok.Epoch, lsnText = uint32(n), rest
	}
	lsn, err := pglogrepl.ParseLSN(lsnText)
	if err != nil {
		return Token{}, fmt.Errorf("parse token: %w", err)
	}
	tok.LSN = lsn
	return tok, nil
}

// Reached reports whether a store whose applied-through position is
// applied has applied t.
func (t Token) Reached(applied Token) bool {
	if applied.Epoch != t.Epoch {
		return applied.Epoch > t.Epoch
	}
	return applied.LSN >= t.LSN
}

// Querier runs a query returning one row: *pgx.Conn, *pgxpool.Pool and
// pgx.Tx all are.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// TakeToken returns the token of everything q's session has committed.
// Call it right after COMMIT, on the connection (or pool) that committed.
// Its source epoch is read from capture's state in the order database
// (see SourceEpoch): the writer's role needs SELECT on
// <CDCSYNC_STATE_SCHEMA>.capture_state (WithStateSchema, WithSlot when
// capture's are not the defaults).
func TakeToken(ctx context.Context, q Querier, opts ...TokenOption) (Token, error) {
	o := newTokenOptions(opts)
	var (
		s  string
		sl slotState
	)
	if err := q.QueryRow(ctx, sqlToken, o.slot, o.table()).Scan(&s, &sl.healthy, &sl.stateExists, &sl.stateReadable); err != nil {
		return Token{}, fmt.Errorf("take read-your-writes token: %w", err)
	}
	tok, err := ParseToken(s)
	if err != nil {
		return Token{}, err
	}
	if tok.Epoch, err = sourceEpoch(ctx, q, o, sl); err != nil {
		return Token{}, fmt.Errorf("take read-your-writes token: %w", err)
	}
	return tok, nil
}

// sqlToken is the position a committed transaction is certainly covered
// by. With synchronous_commit on (or local, remote_write, remote_apply)
// COMMIT returns after its record is flushed, so the WAL write position
// is past it; with synchronous_commit off the record may not be written
// yet, and only the insert position is certainly past it.
// The slot's health and capture's state table are read with it (see
// sourceEpoch).
const sqlToken = `SELECT (CASE WHEN current_setting('synchronous_commit') = 'off'
	THEN pg_current_wal_insert_lsn() ELSE pg_current_wal_lsn() END)::text, ` + sqlSlotState

// sqlSlotHealthy: capture's slot ($1) is on this server and can still
// stream (not invalidated).
const sqlSlotHealthy = `EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND wal_status IS DISTINCT FROM 'lost')`

// sqlSlotState reads slotState: the slot's health, and whether capture's
// state table ($2) exists and may be read.
const sqlSlotState = sqlSlotHealthy + `, to_regclass($2) IS NOT NULL,
	to_regclass($2) IS NOT NULL AND has_table_privilege(to_regclass($2), 'SELECT')`

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

// Package pipeline holds what capture and the sinks share: the event model,
// its wire encoding, stream positions and acknowledgement tracking.
package pipeline

import (
	"database/sql/driver"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
)

// Position orders an event in the change stream: first by the source epoch,
// then by the commit LSN of its transaction, then by the LSN of the change
// inside that transaction. Snapshot and backfill rows carry the position of
// the stream point at which they were emitted, with Change equal to Commit.
//
// The source epoch is a number capture raises whenever it starts over on a
// new slot after the old one was lost (a failover, a restore, an
// invalidated slot): a promoted standby or a restored cluster may write at
// LSNs below those already sent, and those later changes must still count
// as newer. Events without one (older captures, and every event until the
// first such change) are in epoch 0.
type Position struct {
	Epoch  uint32
	Commit pglogrepl.LSN
	Change pglogrepl.LSN
}

// String renders a position as "<commit>:<change>" using Postgres' LSN text
// form, e.g. "0/16B3748:0/16B3700", prefixed with "<epoch>@" when the epoch
// is not 0 ("1795600000@0/16B3748:0/16B3700"). ParsePosition reads it back.
func (p Position) String() string {
	var buf [52]byte
	return string(p.AppendText(buf[:0]))
}

// AppendText appends the String form to buf without allocating (it runs
// once per produced message).
func (p Position) AppendText(buf []byte) []byte {
	if p.Epoch != 0 {
		buf = strconv.AppendUint(buf, uint64(p.Epoch), 10)
		buf = append(buf, '@')
	}
	buf = appendLSN(buf, p.Commit)
	buf = append(buf, ':')
	return appendLSN(buf, p.Change)
}

// appendLSN writes an LSN as Postgres does: %X/%X of its two halves.
func appendLSN(buf []byte, lsn pglogrepl.LSN) []byte {
	start := len(buf)
	buf = strconv.AppendUint(buf, uint64(lsn)>>32, 16)
	buf = append(buf, '/')
	buf = strconv.AppendUint(buf, uint64(lsn)&0xFFFFFFFF, 16)
	// Postgres prints upper-case hex.
	for i := start; i < len(buf); i++ {
		if c := buf[i]; c >= 'a' && c <= 'f' {
			buf[i] = c - 'a' + 'A'
		}
	}
	return buf
}

// ParsePosition parses the text form produced by Position.String.
func ParsePosition(s string) (Position, error) {
	epoch, lsns, err := cutEpoch(s)
	if err != nil {
		return Position{}, err
	}
	commit, change, ok := strings.Cut(lsns, ":")
	if !ok {
		return Position{}, fmt.Errorf("parse position %q: want <commit lsn>:<change lsn>", s)
	}
	c, err := pglogrepl.ParseLSN(commit)
	if err != nil {
		return Position{}, fmt.Errorf("parse position %q: commit lsn: %w", s, err)
	}
	l, err := pglogrepl.ParseLSN(change)
	if err != nil {
		return Position{}, fmt.Errorf("parse position %q: change lsn: %w", s, err)
	}
	return Position{Epoch: epoch, Commit: c, Change: l}, nil
}

// cutEpoch splits the "<epoch>@" prefix off a position's text form.
func cutEpoch(s string) (uint32, string, error) {
	e, rest, ok := strings.Cut(s, "@")
	if !ok {
		return 0, s, nil
	}
	n, err := strconv.ParseUint(e, 10, 32)
	if err != nil {
		return 0, s, fmt.Errorf("parse position %q: source epoch: %w", s, err)
	}
	return uint32(n), rest, nil
}

// PositionEpoch returns the source epoch of a position in text form (the
// position header), 0 when it has none or it does not parse.
func PositionEpoch(s string) uint32 {
	e, _, _ := cutEpoch(s)
	return e
}

// Less reports whether p comes strictly before q in the stream.
func (p Position) Less(q Position) bool {
	if p.Epoch != q.Epoch {
		return p.Epoch < q.Epoch
	}
	if p.Commit != q.Commit {
		return p.Commit < q.Commit
	}
	return p.Change < q.Change
}

// IsZero reports whether p is the zero position (before everything).
func (p Position) IsZero() bool { return p.Epoch == 0 && p.Commit == 0 && p.Change == 0 }

// Scan implements sql.Scanner for the text form.
func (p *Position) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*p = Position{}
		return nil
	case string:
		q, err := ParsePosition(v)
		if err != nil {
			return err
		}
		*p = q
		return nil
	case []byte:
		return p.Scan(string(v))
	default:
		return fmt.Errorf("scan position: unsupported type %T", src)
	}
}

// Value implements driver.Valuer with the text form.
func (p Position) Value() (driver.Value, error) { return p.String(), nil }

// EpochLSN is a point in the source's WAL with its source epoch: what
// watermarks and the sinks' applied-through positions say. Its text form
// is the LSN as Postgres prints it, after "<epoch>@" when the epoch is not
// 0 ("1795600000@0/16B3748"), as in Position.
type EpochLSN struct {
	Epoch uint32
	LSN   pglogrepl.LSN
}

// String renders e in its text form.
func (e EpochLSN) String() string {
	if e.Epoch == 0 {
		return e.LSN.String()
	}
	return strconv.FormatUint(uint64(e.Epoch), 10) + "@" + e.LSN.String()
}

// ParseEpochLSN reads the text form (a bare LSN is in epoch 0).
func ParseEpochLSN(s string) (EpochLSN, error) {
	epoch, rest, err := cutEpoch(s)
	if err != nil {
		return EpochLSN{}, err
	}
	lsn, err := pglogrepl.ParseLSN(rest)
	if err != nil {
		return EpochLSN{}, fmt.Errorf("parse %q: %w", s, err)
	}
	return EpochLSN{Epoch: epoch, LSN: lsn}, nil
}

// Less reports whether e is before f: a newer epoch is later whatever its
// LSNs.
func (e EpochLSN) Less(f EpochLSN) bool {
	if e.Epoch != f.Epoch {
		return e.Epoch < f.Epoch
	}
	return e.LSN < f.LSN
}

// IsZero reports whether e is the start of epoch 0 (nothing).
func (e EpochLSN) IsZero() bool { return e.Epoch == 0 && e.LSN == 0 }

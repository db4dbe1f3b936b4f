package status

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// slotSQL reads the slot and the source's current WAL position in one
// statement, so that the lag is computed from one moment.
const slotSQL = `SELECT s.active, s.active_pid, s.confirmed_flush_lsn::text, w.lsn::text,
	coalesce(pg_wal_lsn_diff(w.lsn, s.confirmed_flush_lsn), 0)::bigint
FROM (SELECT pg_current_wal_lsn() AS lsn) w
LEFT JOIN pg_replication_slots s ON s.slot_name = $1`

func (c *Collector) slot(ctx context.Context) (Slot, error) {
	s := Slot{Name: c.cfg.Slot}
	var active *bool
	var confirmed *string
	err := c.pool.QueryRow(ctx, slotSQL, c.cfg.Slot).Scan(&active, &s.ActivePID, &confirmed, &s.CurrentLSN, &s.LagBytes)
	if err != nil {
		return s, fmt.Errorf("read replication slot %s: %w", c.cfg.Slot, err)
	}
	s.Exists = active != nil
	s.Active = active != nil && *active
	if confirmed != nil {
		s.ConfirmedLSN = *confirmed
	}
	if s.LagBytes < 0 {
		// The slot can be confirmed past the WAL position read in the same
		// statement when capture confirms a keepalive's end position.
		s.LagBytes = 0
	}
	if err := c.lostSlot(ctx, &s); err != nil {
		return s, err
	}
	if err := c.recovering(ctx, &s); err != nil {
		return s, err
	}
	return s, nil
}

// currentLSN is the source's current WAL write position.
func (c *Collector) currentLSN(ctx context.Context) (pglogrepl.LSN, error) {
	var text string
	if err := c.pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&text); err != nil {
		return 0, fmt.Errorf("read current WAL position: %w", err)
	}
	return pglogrepl.ParseLSN(text)
}

// errSlotCreating: the slot exists but has no confirmed position yet.
var errSlotCreating = errors.New("replication slot is being created")

// confirmedLSN is the slot's confirmed position; ok is false when the slot
// does not exist, and the error is errSlotCreating while it is created.
func (c *Collector) confirmedLSN(ctx context.Context) (lsn pglogrepl.LSN, ok bool, err error) {
	var text *string
	err = c.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`,
		c.cfg.Slot).Scan(&text)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read replication slot %s: %w", c.cfg.Slot, err)
	}
	if text == nil {
		// The slot is still being created: CREATE_REPLICATION_SLOT
		// waits for running transactions before it has a position.
		return 0, false, errSlotCreating
	}
	lsn, err = pglogrepl.ParseLSN(*text)
	return lsn, err == nil, err
}

package status

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// lostSlot fills s.WALStatus and judges, as capture does at start, whether
// the slot is lost: invalidated on the server, or missing although capture
// recorded it in <state schema>.capture_source, or recorded on another
// cluster (system identifier). Only what can be read is judged: without
// the record (capture never streamed, or another state schema) a missing
// slot is simply missing.
func (c *Collector) lostSlot(ctx context.Context, s *Slot) error {
	if s.Exists {
		var walStatus, invalidation *string
		err := c.pool.QueryRow(ctx, `SELECT wal_status, to_jsonb(s) ->> 'invalidation_reason' FROM pg_replication_slots s WHERE slot_name = $1`,
			c.cfg.Slot).Scan(&walStatus, &invalidation)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read replication slot %s: %w", c.cfg.Slot, err)
		}
		if walStatus != nil {
			s.WALStatus = *walStatus
		}
		switch {
		case invalidation != nil:
			s.Lost, s.LostDetail = "slot_invalidated", "invalidated: "+*invalidation
		case s.WALStatus == "lost":
			s.Lost, s.LostDetail = "slot_invalidated", "wal_status lost: WAL the slot needed was removed (max_slot_wal_keep_size)"
		}
	}
	if s.Lost != "" || c.cfg.StateSchema == "" {
		return nil
	}
	table := pgx.Identifier{c.cfg.StateSchema, "capture_source"}.Sanitize()
	var present bool
	if err := c.pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&present); err != nil {
		return fmt.Errorf("look up %s: %w", table, err)
	}
	if !present {
		return nil
	}
	var systemID string
	var timeline int32
	err := c.pool.QueryRow(ctx, "SELECT system_id, timeline FROM "+table+" WHERE slot = $1", c.cfg.Slot).Scan(&systemID, &timeline)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", table, err)
	}
	// pg_control_system() may be denied to a monitoring role: then the
	// source cannot be compared, and the slot is judged by itself.
	var current *string
	_ = c.pool.QueryRow(ctx, "SELECT system_identifier::text FROM pg_control_system()").Scan(&current)
	switch {
	case current != nil && *current != systemID:
		s.Lost, s.LostDetail = "source_changed", fmt.Sprintf("system identifier %s, capture recorded %s", *current, systemID)
	case !s.Exists:
		s.Lost, s.LostDetail = "slot_missing", fmt.Sprintf("capture recorded the slot (timeline %d) but the server does not have it: failover, restore or dropped", timeline)
	}
	return nil
}

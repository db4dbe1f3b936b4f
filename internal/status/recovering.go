package status

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/consistency"
	"github.com/cdcsync/cdcsync/pipeline"
)

// recovering fills s.Recovering as capture's /readyz says it: the slot is
// in a source epoch above 0 with an initial snapshot planned (the
// re-snapshot after a lost slot), and that snapshot is unfinished, or
// capture has not confirmed past its end (capture_state.resnapshot_lsn):
// until then the resnapshot-done records may not be on Kafka, and the
// topics are not exact. Rows done and expected are the snapshot's
// backfills'.
func (c *Collector) recovering(ctx context.Context, s *Slot) error {
	schema := c.cfg.StateSchema
	if schema == "" {
		return nil
	}
	state := pgx.Identifier{schema, "capture_state"}.Sanitize()
	registry, backfills := pgx.Identifier{schema, "snapshot_tables"}.Sanitize(), pgx.Identifier{schema, "backfills"}.Sanitize()
	var present bool
	err := c.pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL AND to_regclass($3) IS NOT NULL",
		state, registry, backfills).Scan(&present)
	if err != nil || !present {
		return err
	}
	var (
		epoch           int64
		done            bool
		end             *string
		planned         int64
		rows, rowsTotal int64
	)
	// resnapshot_lsn through to_jsonb: a capture from before it has no
	// such column.
	err = c.pool.QueryRow(ctx, `SELECT s.source_epoch, s.snapshot_done, to_jsonb(s) ->> 'resnapshot_lsn', count(b.id),
			coalesce(sum(b.rows_done), 0), coalesce(sum(greatest(b.rows_total, b.rows_done)), 0)
		FROM `+state+` s LEFT JOIN `+registry+` r ON r.slot = s.slot LEFT JOIN `+backfills+` b ON b.id = r.backfill_id
		WHERE s.slot = $1 GROUP BY s.source_epoch, s.snapshot_done, 3`, c.cfg.Slot).Scan(&epoch, &done, &end, &planned, &rows, &rowsTotal)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read capture's recovery state: %w", err)
	}
	s.SourceEpoch = uint32(epoch)
	if epoch == 0 || planned == 0 {
		return nil
	}
	on := !done
	if done && end != nil {
		confirmed, _ := pglogrepl.ParseLSN(s.ConfirmedLSN)
		endLSN, err := pglogrepl.ParseLSN(*end)
		if err != nil {
			return fmt.Errorf("read capture's recovery state: resnapshot_lsn %q: %w", *end, err)
		}
		on = !s.Exists || confirmed <= endLSN
	}
	if on {
		s.Recovering = fmt.Sprintf("re-snapshot after lost slot, %d/%d rows", rows, rowsTotal)
	}
	return nil
}

// sourcePosition is the source's current WAL position in the source
// epoch a change committed now is captured in (consistency.SourceEpoch),
// to compare the stores' applied-through positions with.
func (c *Collector) sourcePosition(ctx context.Context, current pglogrepl.LSN) pipeline.EpochLSN {
	epoch, err := consistency.SourceEpoch(ctx, c.pool, consistency.WithSlot(c.cfg.Slot), consistency.WithStateSchema(c.cfg.StateSchema))
	if err != nil {
		epoch = 0 // not readable: compare by LSN, as before epochs
	}
	return pipeline.EpochLSN{Epoch: epoch, LSN: current}
}

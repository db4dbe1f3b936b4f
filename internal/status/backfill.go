package status

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Backfill is a backfill of capture's slot that is not done: the initial
// snapshot of a table (Initial) or a `replay snapshot`, pending, running,
// failed or cancelled (the last two stay listed until the next one of the
// table is done).
type Backfill struct {
	ID       int64  `json:"id"`
	Table    string `json:"table"`
	Initial  bool   `json:"initial_snapshot"`
	Status   string `json:"status"`
	RowsDone int64  `json:"rows_done"`
	// RowsTotal is an estimate while the backfill runs.
	RowsTotal int64 `json:"rows_total"`
	// RowsPerSecond is the average rate since the backfill started
	// (restarts of capture included); ETASeconds the time left at it,
	// null when unknown.
	RowsPerSecond float64  `json:"rows_per_s"`
	ETASeconds    *float64 `json:"eta_seconds"`
	Error         string   `json:"error,omitempty"`
}

// Unfinished reports whether the backfill is still to run or running.
func (b Backfill) Unfinished() bool { return b.Status == "pending" || b.Status == "running" }

// backfillsSQL lists the slot's backfills that are not done and not
// superseded by a later done one of the same table; %[1]s is the
// backfills table, %[2]s snapshot_tables.
const backfillsSQL = `SELECT b.id, b.table_schema || '.' || b.table_name, b.status, b.rows_done, coalesce(b.rows_total, 0),
	extract(epoch FROM b.updated_at - b.started_at)::float8, coalesce(b.error, ''),
	EXISTS (SELECT 1 FROM %[2]s s WHERE s.slot = b.slot AND s.backfill_id = b.id)
FROM %[1]s b WHERE b.slot = $1 AND b.status <> 'done' AND NOT EXISTS (
	SELECT 1 FROM %[1]s d WHERE d.slot = b.slot AND d.table_schema = b.table_schema AND d.table_name = b.table_name
	AND d.status = 'done' AND d.id > b.id)
ORDER BY b.id`

// backfills reads the slot's unfinished backfills from capture's state
// schema; none when capture never created its state tables.
func (c *Collector) backfills(ctx context.Context) ([]Backfill, error) {
	schema := c.cfg.StateSchema
	if schema == "" {
		schema = "cdcsync"
	}
	sql := fmt.Sprintf(backfillsSQL, pgx.Identifier{schema, "backfills"}.Sanitize(), pgx.Identifier{schema, "snapshot_tables"}.Sanitize())
	rows, err := c.pool.Query(ctx, sql, c.cfg.Slot)
	if err != nil {
		return nil, backfillsErr(err)
	}
	defer rows.Close()
	var out []Backfill
	for rows.Next() {
		var b Backfill
		var elapsed *float64
		if err := rows.Scan(&b.ID, &b.Table, &b.Status, &b.RowsDone, &b.RowsTotal, &elapsed, &b.Error, &b.Initial); err != nil {
			return nil, backfillsErr(err)
		}
		b.RowsTotal = max(b.RowsTotal, b.RowsDone)
		if elapsed != nil && *elapsed > 0 {
			b.RowsPerSecond = float64(b.RowsDone) / *elapsed
		}
		if b.Unfinished() && b.RowsPerSecond > 0 {
			eta := float64(b.RowsTotal-b.RowsDone) / b.RowsPerSecond
			b.ETASeconds = &eta
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, backfillsErr(err)
	}
	return out, nil
}

func backfillsErr(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.UndefinedTable || pgErr.Code == pgerrcode.InvalidSchemaName) {
		return nil // capture has not created its state yet: nothing to report
	}
	return fmt.Errorf("read capture's backfills: %w", err)
}

// snapshotLeft returns the rows the initial snapshot has still to read
// and whether it is unfinished.
func (c *Collector) snapshotLeft(ctx context.Context) (left int64, unfinished bool, err error) {
	bfs, err := c.backfills(ctx)
	for _, b := range bfs {
		if b.Initial && b.Unfinished() {
			unfinished = true
			left += b.RowsTotal - b.RowsDone
		}
	}
	return left, unfinished, err
}

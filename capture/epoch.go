package capture

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"
)

// sourceEpoch returns the source epoch of this session's positions (see
// pipeline.Position), kept per slot in capture_state.source_epoch.
//
// A slot that exists keeps its epoch. A slot capture creates where one was
// before (capture created one, or recorded the source for one) starts a new
// epoch: the old slot was lost to a failover, a restore or invalidation, or
// dropped, and the new one may stream from LSNs below those already sent,
// which the sinks must still take as newer. The new epoch is the source's
// clock in Unix seconds (at least the old epoch + 1), not a counter: a
// restore brings back an older capture_state, and a counter could then hand
// out an epoch again that positions already on the topics carry. The first
// slot ever stays in epoch 0, which every position from before epochs
// existed is in. It is stored before the slot is created, so a stop between
// the two raises it again rather than streaming the new slot in an old
// epoch.
// lost says the slot was there before and was lost (its source record
// exists, or a lost slot was just accepted).
func (s stateStore) sourceEpoch(ctx context.Context, conn *pgx.Conn, slot string, slotExists, lost bool) (uint32, error) {
	if err := s.ensureEpochColumn(ctx, conn); err != nil {
		return 0, err
	}
	var (
		epoch   int64
		created bool // capture created a slot of this name before
	)
	err := conn.QueryRow(ctx, "SELECT source_epoch, consistent_lsn IS NOT NULL FROM "+s.table()+" WHERE slot = $1", slot).Scan(&epoch, &created)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("read source epoch: %w", err)
	}
	if !slotExists {
		if created || lost {
			err := conn.QueryRow(ctx, "INSERT INTO "+s.table()+` AS s (slot, snapshot_done, source_epoch)
				VALUES ($1, false, greatest($2::bigint + 1, extract(epoch FROM clock_timestamp())::bigint))
				ON CONFLICT (slot) DO UPDATE SET source_epoch = EXCLUDED.source_epoch,
					consistent_lsn = NULL, resnapshot_lsn = NULL, updated_at = now()
				RETURNING source_epoch`, slot, epoch).Scan(&epoch)
			if err != nil {
				return 0, fmt.Errorf("start a new source epoch: %w", err)
			}
		}
	}
	if epoch < 0 || epoch > math.MaxUint32 {
		return 0, fmt.Errorf("source epoch %d of slot %s is out of range", epoch, slot)
	}
	return uint32(epoch), nil
}

// ensureEpochColumn adds source_epoch (0: the epoch of every position it
// streamed) and resnapshot_lsn (recovery.go) to a capture_state table from
// before they existed. It looks first, so a role that does not own the
// table needs nothing more once an administrator added the columns.
func (s stateStore) ensureEpochColumn(ctx context.Context, conn *pgx.Conn) error {
	for _, col := range [][2]string{{"source_epoch", "bigint NOT NULL DEFAULT 0"}, {"resnapshot_lsn", "pg_lsn"}} {
		var exists bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute
			WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped)`, s.table(), col[0]).Scan(&exists)
		if err != nil {
			return fmt.Errorf("look up capture state column %s: %w", col[0], err)
		}
		if exists {
			continue
		}
		if _, err := conn.Exec(ctx, "ALTER TABLE "+s.table()+" ADD COLUMN IF NOT EXISTS "+col[0]+" "+col[1]); err != nil {
			return fmt.Errorf("add column %s to capture state %s: %w", col[0], s.table(), err)
		}
	}
	return nil
}

package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/pipeline"
)

// A recovery is the re-snapshot after a lost slot (a source epoch above 0
// read again with CDCSYNC_SNAPSHOT=when_needed, or initial after the
// operator accepted the loss), from the session that plans or resumes it
// until Kafka has acknowledged its resnapshot-done records. Until then the
// topics are not exact: rows deleted while no slot recorded are still on
// them, and rows not read again yet are old. So, meanwhile:
//   - /readyz says "recovering: re-snapshot after lost slot, N/M rows"
//     (recoveryGate) and cdcsync_capture_recovering is 1;
//   - no watermark of the new epoch is written: a sink's applied-through
//     position reaches the new epoch only after it has applied every row
//     of the re-snapshot and the resnapshot-done record of each topic, so
//     a read-your-writes token of the new primary (or a verify cut) is
//     not answered before the sweep removed what was deleted in the gap.
//
// The end is known by LSN: capture_state.resnapshot_lsn, the resnapshot
// message's, written in the transaction that ends the snapshot. Capture
// confirms an LSN past it only once Kafka acknowledged the records the
// message causes, so a restart in between recovers again until then.
type recovery struct {
	log     *slog.Logger
	metrics *metrics

	mu     sync.Mutex
	active bool
	doneAt pglogrepl.LSN      // the resnapshot message's LSN, once known (0: not yet)
	rows   map[int64][2]int64 // per snapshot backfill: rows done, rows expected
}

// loadRecovery reads whether the session resumes or starts a recovery:
// the slot is in a source epoch above 0, its initial snapshot is planned,
// and it is unfinished or its end is not confirmed (past confirmed). It
// returns an inactive recovery otherwise.
func (c *capturer) loadRecovery(ctx context.Context, conn *pgx.Conn, epoch uint32, confirmed pglogrepl.LSN) (*recovery, error) {
	r := &recovery{log: c.log, metrics: c.metrics, rows: map[int64][2]int64{}}
	if epoch == 0 || c.cfg.Snapshot == "never" {
		return r, nil
	}
	state := stateStore{schema: c.cfg.StateSchema}
	var (
		done bool
		end  *string
	)
	err := conn.QueryRow(ctx, "SELECT snapshot_done, resnapshot_lsn::text FROM "+state.table()+" WHERE slot = $1", c.cfg.Slot).Scan(&done, &end)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read recovery state: %w", err)
	}
	registry, backfills := snapshotTables{schema: c.cfg.StateSchema}, backfillStore{schema: c.cfg.StateSchema}
	rows, err := conn.Query(ctx, `SELECT b.id, b.rows_done, greatest(b.rows_total, b.rows_done) FROM `+registry.table()+
		` r JOIN `+backfills.table()+` b ON b.id = r.backfill_id WHERE r.slot = $1`, c.cfg.Slot)
	if err != nil {
		return nil, fmt.Errorf("read recovery progress: %w", err)
	}
	var id, n, total int64
	_, err = pgx.ForEachRow(rows, []any{&id, &n, &total}, func() error {
		r.rows[id] = [2]int64{n, total}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read recovery progress: %w", err)
	}
	if end != nil {
		if r.doneAt, err = pglogrepl.ParseLSN(*end); err != nil {
			return nil, fmt.Errorf("read recovery state: resnapshot_lsn %q: %w", *end, err)
		}
	}
	switch {
	case len(r.rows) == 0:
	case !done:
		r.active = true
	case r.doneAt != 0 && confirmed <= r.doneAt:
		r.active = true // ended, but its records may not be on Kafka
	}
	if r.active {
		c.metrics.recovering.Set(1)
	}
	return r, nil
}

// recovering reports whether the recovery is still on at confirmed (the
// LSN capture has confirmed): a watermark at confirmed is held back.
func (r *recovery) recovering(confirmed pglogrepl.LSN) bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.active && (r.doneAt == 0 || confirmed <= r.doneAt)
}

// resnapshotSent records the LSN of the resnapshot message whose records
// the stream just produced.
func (r *recovery) resnapshotSent(at pglogrepl.LSN) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.active && r.doneAt < at {
		r.doneAt = at
	}
}

// noteRows records a snapshot backfill's progress.
func (r *recovery) noteRows(id, done, total int64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.rows[id]; ok || r.active {
		r.rows[id] = [2]int64{done, total}
	}
}

// status returns the /readyz reason while the recovery is on at
// confirmed; ok is false once it is over (and it ends it).
func (r *recovery) status(confirmed pglogrepl.LSN) (reason string, ok bool) {
	if r == nil {
		return "", false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.active {
		return "", false
	}
	if r.doneAt != 0 && confirmed > r.doneAt {
		r.active = false
		r.metrics.recovering.Set(0)
		r.log.Info("recovered from the lost slot: the resnapshot-done records are on Kafka, the topics are exact again", "confirmed", confirmed)
		return "", false
	}
	var done, total int64
	for _, v := range r.rows {
		done += v[0]
		total += max(v[1], v[0])
	}
	if r.doneAt != 0 {
		return fmt.Sprintf("recovering: re-snapshot after lost slot, %d/%d rows, waiting for Kafka to acknowledge the resnapshot-done records", done, total), true
	}
	return fmt.Sprintf("recovering: re-snapshot after lost slot, %d/%d rows", done, total), true
}

// recoveryGate keeps /readyz not ready, saying why and how far, while a
// recovery is on: the topics are not exact yet. Otherwise it passes the
// session's readiness through.
type recoveryGate struct {
	Readiness
	rec     *recovery
	tracker *pipeline.Tracker

	mu   sync.Mutex
	want bool // the session reports ready
}

// SetReady reports ready, or the recovery while one is on.
func (g *recoveryGate) SetReady() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.want = true
	g.apply()
}

// SetNotReady passes a reason through.
func (g *recoveryGate) SetNotReady(reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.want = false
	g.Readiness.SetNotReady(reason)
}

func (g *recoveryGate) apply() {
	if !g.want {
		return
	}
	if reason, on := g.rec.status(g.tracker.Confirmed()); on {
		g.Readiness.SetNotReady(reason)
		return
	}
	g.Readiness.SetReady()
}

// run refreshes the progress and ends the recovery once capture confirmed
// past its end, then returns; it returns at once when none is on.
func (g *recoveryGate) run(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for g.rec.recovering(0) {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.mu.Lock()
		g.apply()
		g.mu.Unlock()
	}
}

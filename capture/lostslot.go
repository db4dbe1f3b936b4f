package capture

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrSlotLost: the slot capture streamed from is gone or invalidated, or the
// source is another cluster than the one capture recorded, so changes were
// committed that no slot recorded. Continuing would leave them (deleted rows
// in particular) missing from the topics and sinks for good.
var ErrSlotLost = errors.New("replication slot lost")

// Reasons a slot counts as lost, as the metric label and in /readyz.
const (
	lostMissing       = "slot_missing"     // dropped, or a failover / restore without it
	lostInvalidated   = "slot_invalidated" // wal_status 'lost' (max_slot_wal_keep_size) or an invalidation reason
	lostSourceChanged = "source_changed"   // another system identifier than recorded
)

// sourceIdentity is what IDENTIFY_SYSTEM says about the source cluster.
type sourceIdentity struct {
	SystemID string
	Timeline int32
}

// sourceStore records, per slot, the identity of the cluster capture last
// streamed from, in the order database next to capture's other state. A
// physical standby replicates the record, so after a failover (or a
// restore) capture finds a record for a slot the server does not have.
type sourceStore struct{ schema string }

func (s sourceStore) table() string { return pgx.Identifier{s.schema, "capture_source"}.Sanitize() }

func (s sourceStore) ensure(ctx context.Context, conn *pgx.Conn) error {
	return ensureStateTable(ctx, conn, s.schema, "capture_source", `(
			slot text PRIMARY KEY,
			system_id text NOT NULL,
			timeline integer NOT NULL,
			updated_at timestamptz NOT NULL DEFAULT now())`)
}

func (s sourceStore) read(ctx context.Context, conn *pgx.Conn, slot string) (sourceIdentity, bool, error) {
	var id sourceIdentity
	err := conn.QueryRow(ctx, "SELECT system_id, timeline FROM "+s.table()+" WHERE slot = $1", slot).Scan(&id.SystemID, &id.Timeline)
	if errors.Is(err, pgx.ErrNoRows) {
		return id, false, nil
	}
	if err != nil {
		return id, false, fmt.Errorf("read capture source record: %w", err)
	}
	return id, true, nil
}

// record notes that slot exists on the source id; called once the slot
// exists, so that a record always means "this slot was there".
func (s sourceStore) record(ctx context.Context, conn *pgx.Conn, slot string, id sourceIdentity) error {
	_, err := conn.Exec(ctx, "INSERT INTO "+s.table()+` (slot, system_id, timeline) VALUES ($1, $2, $3)
		ON CONFLICT (slot) DO UPDATE SET system_id = EXCLUDED.system_id, timeline = EXCLUDED.timeline, updated_at = now()`,
		slot, id.SystemID, id.Timeline)
	if err != nil {
		return fmt.Errorf("write capture source record: %w", err)
	}
	return nil
}

// forget is the SQL an operator runs to accept a lost slot, for messages.
func (s sourceStore) forget(slot string) string {
	return "DELETE FROM " + s.table() + " WHERE slot = " + quoteLiteral(slot)
}

func identifySource(ctx context.Context, repl *pgconn.PgConn) (sourceIdentity, error) {
	res, err := pglogrepl.IdentifySystem(ctx, repl)
	if err != nil {
		return sourceIdentity{}, fmt.Errorf("identify source system: %w", err)
	}
	return sourceIdentity{SystemID: res.SystemID, Timeline: res.Timeline}, nil
}

// slotLoss says whether and why the slot counts as lost.
type slotLoss struct {
	reason string // one of the lost* constants; "" when the slot is fine
	detail string // what happened, for the log line and the error
	fix    string // the statements that accept the loss by hand
	note   string // no loss, but worth a log line (a failover the slot survived)
}

// checkSlot compares the slot and the source with what capture recorded.
// A changed timeline with the slot still there (a Postgres 17 failover
// slot synchronised to the standby) is no loss: the slot kept its place.
func checkSlot(ctx context.Context, conn *pgx.Conn, store sourceStore, name string, exists bool, now sourceIdentity) (slotLoss, error) {
	rec, recorded, err := store.read(ctx, conn, name)
	if err != nil {
		return slotLoss{}, err
	}
	forget := store.forget(name)
	if recorded && rec.SystemID != now.SystemID {
		fix := forget
		if exists {
			fix = "SELECT pg_drop_replication_slot(" + quoteLiteral(name) + "); " + forget
		}
		return slotLoss{reason: lostSourceChanged, fix: fix,
			detail: fmt.Sprintf("the source is another cluster (system identifier %s, capture recorded %s): restored from a dump, re-initialised, or the URL points elsewhere",
				now.SystemID, rec.SystemID)}, nil
	}
	if exists {
		var walStatus, invalidation *string
		err := conn.QueryRow(ctx, `SELECT wal_status, to_jsonb(s) ->> 'invalidation_reason' FROM pg_replication_slots s WHERE slot_name = $1`,
			name).Scan(&walStatus, &invalidation)
		if errors.Is(err, pgx.ErrNoRows) {
			exists = false // dropped since it was read: judge it as missing
		} else if err != nil {
			return slotLoss{}, fmt.Errorf("read slot %s: %w", name, err)
		} else if (walStatus != nil && *walStatus == "lost") || invalidation != nil {
			why := "wal_status lost: the server removed WAL the slot still needed (max_slot_wal_keep_size)"
			if invalidation != nil {
				why = "invalidated: " + *invalidation
			}
			return slotLoss{reason: lostInvalidated, detail: why,
				fix: "SELECT pg_drop_replication_slot(" + quoteLiteral(name) + "); " + forget}, nil
		}
	}
	if !exists && recorded {
		detail := "it was dropped, or the database was restored without it"
		if rec.Timeline != now.Timeline {
			detail = fmt.Sprintf("the source is on timeline %d, capture recorded %d: a standby was promoted (failover) or the cluster was restored, and the slot did not come along",
				now.Timeline, rec.Timeline)
		}
		return slotLoss{reason: lostMissing, detail: detail, fix: forget}, nil
	}
	if recorded && rec.Timeline != now.Timeline {
		return slotLoss{note: fmt.Sprintf("the source moved from timeline %d to %d (failover or restore) and the slot came along (a failover slot)",
			rec.Timeline, now.Timeline)}, nil
	}
	return slotLoss{}, nil
}

// checkSlotAndSource identifies the source and refuses a lost slot (see
// refuseLostSlot), or with CDCSYNC_SNAPSHOT=when_needed accepts it (see
// acceptLostSlot). It returns the identity to record once the slot exists,
// and whether a lost slot was accepted (it is to be created again).
func (c *capturer) checkSlotAndSource(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn, store sourceStore, exists bool) (sourceIdentity, bool, error) {
	if err := store.ensure(ctx, conn); err != nil {
		return sourceIdentity{}, false, err
	}
	id, err := identifySource(ctx, repl)
	if err != nil {
		return id, false, err
	}
	loss, err := checkSlot(ctx, conn, store, c.cfg.Slot, exists, id)
	if err != nil {
		return id, false, err
	}
	if loss.note != "" {
		c.log.Info("source changed timeline; the slot is intact", "slot", c.cfg.Slot, "detail", loss.note)
	}
	if loss.reason == "" {
		return id, false, nil
	}
	if c.cfg.Snapshot != "when_needed" {
		return id, false, c.refuseLostSlot(loss)
	}
	return id, true, c.acceptLostSlot(ctx, conn, store, loss, exists)
}

// acceptLostSlot starts over after a lost slot (CDCSYNC_SNAPSHOT=
// when_needed): it drops what is left of the slot and forgets the recorded
// source, so that this session creates the slot again, in a new source
// epoch, and reads every table again (planSnapshot, for a new slot). Once
// that snapshot is done, capture tells the sinks to remove what it did not
// re-emit (sendResnapshotDone).
func (c *capturer) acceptLostSlot(ctx context.Context, conn *pgx.Conn, store sourceStore, loss slotLoss, exists bool) error {
	c.log.Error("replication slot lost: changes committed while no slot recorded them were never captured; "+
		"CDCSYNC_SNAPSHOT=when_needed: creating the slot again and reading every table again, then the sinks remove rows deleted meanwhile",
		"slot", c.cfg.Slot, "reason", loss.reason, "detail", loss.detail)
	c.metrics.slotRecreated.WithLabelValues(loss.reason).Inc()
	if exists {
		// Only if it is still there: it may have been dropped since.
		if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", c.cfg.Slot); err != nil {
			return fmt.Errorf("drop lost replication slot %s: %w", c.cfg.Slot, err)
		}
	}
	if _, err := conn.Exec(ctx, "DELETE FROM "+store.table()+" WHERE slot = $1", c.cfg.Slot); err != nil {
		return fmt.Errorf("forget the capture source record of slot %s: %w", c.cfg.Slot, err)
	}
	return nil
}

// refuseLostSlot reports a lost slot in one log line, /readyz and the
// metric, and returns the error capture stops with: with
// CDCSYNC_SNAPSHOT=initial or never nothing can make the sinks exact
// again without a new snapshot and a sweep of what it did not re-emit,
// so capture confirms nothing and stops.
func (c *capturer) refuseLostSlot(loss slotLoss) error {
	c.metrics.slotLost.WithLabelValues(loss.reason).Set(1)
	msg := fmt.Sprintf("replication slot %s is lost (%s): %s", c.cfg.Slot, loss.reason, loss.detail)
	c.opts.ready.SetNotReady(msg)
	c.log.Error("replication slot lost: changes committed while no slot recorded them were never captured; refusing to continue",
		"slot", c.cfg.Slot, "reason", loss.reason, "detail", loss.detail, "snapshot", c.cfg.Snapshot)
	return fmt.Errorf("%w: %s. With CDCSYNC_SNAPSHOT=%s capture confirms nothing and stops: the topics and sinks would keep rows deleted in the gap. "+
		"Recover by hand (README: When the order database fails over): run %s, restart capture (with initial it snapshots every table again; with never run `cdcsync replay snapshot`), "+
		"then rebuild or check the sinks (`cdcsync verify`). CDCSYNC_SNAPSHOT=when_needed does this by itself, and has the sinks remove the rows deleted in the gap",
		ErrSlotLost, msg, c.cfg.Snapshot, loss.fix)
}

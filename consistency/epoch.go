package consistency

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// TokenOption adjusts TakeToken and SourceEpoch.
type TokenOption func(*tokenOptions)

type tokenOptions struct {
	slot, stateSchema string
}

// WithSlot names capture's slot (CDCSYNC_SLOT; default cdcsync).
func WithSlot(slot string) TokenOption { return func(o *tokenOptions) { o.slot = slot } }

// WithStateSchema names capture's state schema (CDCSYNC_STATE_SCHEMA;
// default cdcsync).
func WithStateSchema(schema string) TokenOption {
	return func(o *tokenOptions) { o.stateSchema = schema }
}

// table is capture's state table.
func (o tokenOptions) table() string {
	return pgx.Identifier{o.stateSchema, "capture_state"}.Sanitize()
}

func newTokenOptions(opts []TokenOption) tokenOptions {
	o := tokenOptions{slot: "cdcsync", stateSchema: "cdcsync"}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// SourceEpoch returns the source epoch in which capture carries (or will
// carry) a change committed now on the server q is connected to. Capture
// keeps it per slot in <state schema>.capture_state.source_epoch.
//
// While capture's slot is on the server and healthy, that is its epoch.
// When it is not (the server is a promoted standby, a restored cluster,
// or the slot was invalidated), capture has not started over yet: it will
// create the slot again in a newer epoch (at least the recorded one + 1)
// and re-read every table, so a change committed now is in that epoch,
// unless capture already raised the epoch for the slot it is about to
// create (the record then has no consistent point yet). Without a state
// table or a record capture never created a slot here: epoch 0.
func SourceEpoch(ctx context.Context, q Querier, opts ...TokenOption) (uint32, error) {
	o := newTokenOptions(opts)
	var sl slotState
	if err := q.QueryRow(ctx, "SELECT "+sqlSlotState, o.slot, o.table()).Scan(&sl.healthy, &sl.stateExists, &sl.stateReadable); err != nil {
		return 0, fmt.Errorf("read source epoch: slot %s: %w", o.slot, err)
	}
	return sourceEpoch(ctx, q, o, sl)
}

// slotState is what sqlSlotState reads.
type slotState struct {
	healthy                    bool // capture's slot is on the server and not invalidated
	stateExists, stateReadable bool // capture's state table
}

// sourceEpoch reads capture's record after the slot's health was read
// (healthy): a slot seen before the record is read has its epoch in it,
// since capture writes the epoch before it creates the slot. When the slot
// appeared in between, the record is read again.
func sourceEpoch(ctx context.Context, q Querier, o tokenOptions, sl slotState) (uint32, error) {
	table := o.table()
	if !sl.stateExists {
		return 0, nil // no capture ever ran against this database
	}
	if !sl.stateReadable {
		return 0, fmt.Errorf("read source epoch: the role may not read %s (GRANT SELECT ON %s TO <the writer's role>; README: Read your own writes)", table, table)
	}
	healthy := sl.healthy
	for range 3 {
		var (
			epoch      int64
			pending    bool // raised for a slot not created yet
			healthyNow bool
		)
		err := q.QueryRow(ctx, `SELECT source_epoch, consistent_lsn IS NULL, `+sqlSlotHealthy+` FROM `+table+` WHERE slot = $1`,
			o.slot).Scan(&epoch, &pending, &healthyNow)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, nil
		}
		if err != nil {
			return 0, fmt.Errorf("read source epoch from %s: %w", table, err)
		}
		switch {
		case healthy, pending:
			return uint32(epoch), nil
		case healthyNow:
			healthy = true // created meanwhile: read its record again
		default:
			return uint32(epoch) + 1, nil
		}
	}
	return 0, fmt.Errorf("read source epoch: capture's slot %s keeps changing", o.slot)
}

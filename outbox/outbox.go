// Package outbox lets a service publish domain events through its own
// Postgres transaction: the event is written inside the transaction that
// changes the data, and cdcsync capture publishes it to Kafka if and only if
// that transaction commits. There is no window in which the data is saved
// but the event lost (or the event sent for data that was rolled back).
//
//	pub, _ := outbox.New() // message mode, prefix "cdcsync.outbox"
//	tx, _ := conn.Begin(ctx)
//	_, err := tx.Exec(ctx, `INSERT INTO orders ...`)
//	err = pub.Publish(ctx, tx, outbox.Event{
//		Aggregate: "order", AggregateID: "42", Type: "OrderCreated",
//		Payload: []byte(`{"item_id":7,"quantity":2}`),
//	})
//	err = tx.Commit(ctx)
//
// Two storage modes:
//
//   - Message mode (default) emits a transactional logical decoding message
//     (pg_logical_emit_message(true, prefix, envelope)). Nothing is stored in
//     tables; the event exists only in the WAL, which capture reads.
//   - Table mode (WithTable) inserts a row into an outbox table with the
//     columns of Debezium's outbox event router (id, aggregatetype,
//     aggregateid, type, payload, plus headers), for teams that want to query
//     events or move from Debezium without touching consumers. With
//     WithDeleteAfterInsert the row is deleted in the same transaction: the
//     WAL still carries the insert, which capture publishes, and the table
//     stays empty.
//
// Malformed events (missing aggregate or aggregate id, payload that is not
// JSON when JSON is declared, ...) are rejected by Publish before anything
// is sent to the database, with a *ValidationError.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// DefaultPrefix is the logical decoding message prefix of message mode. It
// must equal capture's CDCSYNC_OUTBOX_PREFIX.
const DefaultPrefix = "cdcsync.outbox"

// DefaultMaxPayloadBytes is the default payload limit: capture's default
// CDCSYNC_KAFKA_MAX_MESSAGE_BYTES. A bigger event would be committed but
// could never be produced, so Publish refuses it up front.
const DefaultMaxPayloadBytes = 1000000

// DB is what Publish writes through. A pgx.Tx is the intended use: the events
// commit or roll back with the caller's transaction. *pgx.Conn,
// *pgxpool.Pool and *pgxpool.Conn work too; the events of one Publish call
// are then sent as one batch, which Postgres runs as one implicit
// transaction, so they are still all-or-nothing (but no longer tied to any
// other write).
type DB interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

var (
	_ DB = (pgx.Tx)(nil)
	_ DB = (*pgx.Conn)(nil)
)

// Publisher writes events in one storage mode. It holds no connection and
// no mutable state, so one Publisher serves every goroutine.
type Publisher struct {
	prefix            string
	table             pgx.Identifier // nil: message mode
	deleteAfterInsert bool
	maxPayload        int

	insertSQL, deleteSQL string
}

// Option configures a Publisher.
type Option func(*Publisher)

// WithPrefix sets the logical decoding message prefix used in message mode.
// Default DefaultPrefix ("cdcsync.outbox").
func WithPrefix(prefix string) Option { return func(p *Publisher) { p.prefix = prefix } }

// WithTable switches to table mode: events are rows of schema.table, a table
// shaped like CreateTable's. Capture must be told the same table
// (CDCSYNC_OUTBOX_TABLE). Default: message mode.
func WithTable(schema, table string) Option {
	return func(p *Publisher) { p.table = pgx.Identifier{schema, table} }
}

// WithDeleteAfterInsert deletes each event row in the same transaction right
// after inserting it (table mode only). Capture publishes the insert and
// ignores the delete, and the table does not grow. Default: rows are kept.
func WithDeleteAfterInsert() Option { return func(p *Publisher) { p.deleteAfterInsert = true } }

// WithMaxPayloadBytes sets the largest payload Publish accepts. Keep it at or
// below capture's CDCSYNC_KAFKA_MAX_MESSAGE_BYTES minus room for headers.
// Default DefaultMaxPayloadBytes.
func WithMaxPayloadBytes(n int) Option { return func(p *Publisher) { p.maxPayload = n } }

// New returns a Publisher. Without options it uses message mode with prefix
// DefaultPrefix and a DefaultMaxPayloadBytes limit.
func New(opts ...Option) (*Publisher, error) {
	p := &Publisher{prefix: DefaultPrefix, maxPayload: DefaultMaxPayloadBytes}
	for _, o := range opts {
		o(p)
	}
	if p.maxPayload <= 0 {
		return nil, fmt.Errorf("outbox: max payload bytes must be positive, got %d", p.maxPayload)
	}
	if p.table == nil {
		if p.prefix == "" {
			return nil, errors.New("outbox: message prefix must not be empty")
		}
		if p.deleteAfterInsert {
			return nil, errors.New("outbox: WithDeleteAfterInsert needs table mode (WithTable)")
		}
		return p, nil
	}
	if p.table[0] == "" || p.table[1] == "" {
		return nil, fmt.Errorf("outbox: table needs a schema and a name, got %q.%q", p.table[0], p.table[1])
	}
	name := p.table.Sanitize()
	p.insertSQL = `INSERT INTO ` + name + ` (id, aggregatetype, aggregateid, type, payload, headers)
		VALUES ($1::uuid, $2, $3, $4, $5::jsonb, $6::jsonb)`
	p.deleteSQL = `DELETE FROM ` + name + ` WHERE id = $1::uuid`
	return p, nil
}

// Publish writes events through db, in order. Every event is validated
// first: if any is malformed, Publish returns its *ValidationError and
// sends nothing. An event without ID gets a fresh UUID. Publish does not
// commit: the events become visible to capture when db's transaction
// commits, and never if it rolls back.
func (p *Publisher) Publish(ctx context.Context, db DB, events ...Event) error {
	if len(events) == 0 {
		return nil
	}
	prepared := make([]Event, len(events))
	for i, e := range events {
		ev, err := e.prepare(i, p.maxPayload)
		if err != nil {
			return err
		}
		if p.table != nil && !IsJSONContentType(ev.ContentType) {
			return &ValidationError{Index: i, inPublish: true, ID: ev.ID, Field: "ContentType", Err: ErrInvalidContentType,
				Detail: fmt.Sprintf("%q: the outbox table stores JSON payloads only; use message mode", ev.ContentType)}
		}
		prepared[i] = ev
	}
	batch := &pgx.Batch{}
	for _, e := range prepared {
		if err := p.queue(batch, e); err != nil {
			return err
		}
	}
	br := db.SendBatch(ctx, batch)
	for i := range batch.QueuedQueries {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			e := prepared[p.eventOf(i)]
			return fmt.Errorf("outbox: publish %s event %s of %s %s: %w", e.Type, e.ID, e.Aggregate, e.AggregateID, err)
		}
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("outbox: publish: %w", err)
	}
	return nil
}

// queue adds the statements that store e.
func (p *Publisher) queue(b *pgx.Batch, e Event) error {
	if p.table == nil {
		// The bytea variant: the text variant would be converted to the
		// database encoding, changing the bytes capture reads back.
		b.Queue(`SELECT pg_logical_emit_message(true, $1::text, $2::bytea)`, p.prefix, EncodeMessage(e))
		return nil
	}
	var headers []byte // nil is SQL NULL
	if len(e.Headers) > 0 {
		var err error
		if headers, err = json.Marshal(e.Headers); err != nil {
			return fmt.Errorf("outbox: encode headers of event %s: %w", e.ID, err)
		}
	}
	// pgx sends a []byte for a jsonb parameter as the JSON text itself.
	b.Queue(p.insertSQL, e.ID, e.Aggregate, e.AggregateID, e.Type, e.Payload, headers)
	if p.deleteAfterInsert {
		b.Queue(p.deleteSQL, e.ID)
	}
	return nil
}

// eventOf maps a batch statement index to the event it belongs to.
func (p *Publisher) eventOf(stmt int) int {
	if p.deleteAfterInsert {
		return stmt / 2
	}
	return stmt
}

package capture

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/outbox"
	"github.com/cdcsync/cdcsync/pipeline"
)

// Kafka headers of an outbox event (besides pipeline.HeaderPosition and the
// event's own headers). "id" is where Debezium's outbox event router puts
// the event id, so consumers that de-duplicate on it keep working.
const (
	HeaderEventID       = "id"
	HeaderEventType     = "type"
	HeaderAggregateType = "aggregatetype"
	HeaderContentType   = "content-type"
	// HeaderOutboxSource, on a dead-letter record, says where the malformed
	// event was found: "message <prefix>" or "table <schema>.<table>".
	HeaderOutboxSource = "cdcsync.outbox.source"
)

// errNonTransactional: a non-transactional logical message is decoded even
// when its transaction rolls back, so publishing it would break the
// outbox's promise. outbox.Publish never writes one.
var errNonTransactional = errors.New("outbox message is not transactional: it is decoded even if its transaction rolled back")

// InvalidOutboxEventError reports an outbox event in the WAL that cannot be
// published (a malformed envelope or row, a non-transactional message). It
// must not stop capture: the caller produces DeadLetter, which goes to the
// outbox dead-letter topic (<outbox topic prefix>.dlq) with the reason in
// the pipeline.HeaderDLQError header and the source position, and acks it
// like any record. Every other error of the router is a bug to stop on.
type InvalidOutboxEventError struct {
	Err        error
	DeadLetter Record
}

func (e *InvalidOutboxEventError) Error() string {
	return "invalid outbox event at " + e.DeadLetter.Position.String() + ": " + e.Err.Error()
}

func (e *InvalidOutboxEventError) Unwrap() error { return e.Err }

// OutboxRouter turns outbox events found in the stream into Kafka records:
// transactional logical decoding messages with the outbox prefix (message
// mode) and inserts into the outbox table (table mode). See package outbox
// for the writing side.
//
// An event becomes one record on <topic prefix>.<aggregate> with key the
// aggregate id, so key-hash partitioning keeps each aggregate's events in
// commit order; value the payload as the service gave it; headers id, type,
// aggregatetype, content-type, pipeline.HeaderPosition and the event's own.
//
// The router is used by the stream's goroutine only (Change remembers the
// last outbox delete).
type OutboxRouter struct {
	prefix        string // message prefix; "" disables message mode
	schema, table string // outbox table; "" disables table mode
	topicPrefix   string

	lastDelete pipeline.Position // position of the last outbox-table delete
	sawDelete  bool
}

// NewOutboxRouter reads the outbox settings of cfg: OutboxPrefix (empty
// disables message mode), OutboxTable ("schema.table", a bare name meaning
// public; empty disables table mode) and OutboxTopicPrefix (empty:
// TopicPrefix + ".events").
func NewOutboxRouter(cfg config.Capture) (*OutboxRouter, error) {
	r := &OutboxRouter{prefix: cfg.OutboxPrefix, topicPrefix: cfg.OutboxTopicPrefix}
	if r.prefix == heartbeatPrefix {
		return nil, fmt.Errorf("CDCSYNC_OUTBOX_PREFIX: %q is capture's heartbeat prefix", r.prefix)
	}
	if cfg.OutboxTable != "" {
		r.schema, r.table = "public", cfg.OutboxTable
		if s, t, ok := strings.Cut(cfg.OutboxTable, "."); ok {
			r.schema, r.table = s, t
		}
		if r.schema == "" || r.table == "" || strings.Contains(r.table, ".") {
			return nil, fmt.Errorf("CDCSYNC_OUTBOX_TABLE: %q must be schema.table, e.g. public.outbox", cfg.OutboxTable)
		}
	}
	if r.topicPrefix == "" {
		if cfg.TopicPrefix == "" {
			return nil, errors.New("CDCSYNC_OUTBOX_TOPIC_PREFIX: empty, and CDCSYNC_TOPIC_PREFIX is empty too")
		}
		r.topicPrefix = cfg.TopicPrefix + ".events"
	}
	return r, nil
}

// Table returns the outbox table and whether table mode is on. Set-up must
// add it to the publication, and the snapshot should skip it (Change drops
// snapshot rows anyway).
func (r *OutboxRouter) Table() (schema, table string, ok bool) {
	return r.schema, r.table, r.table != ""
}

// IsOutboxTable reports whether schema.table is the outbox table.
func (r *OutboxRouter) IsOutboxTable(schema, table string) bool {
	return r.table != "" && schema == r.schema && table == r.table
}

// Topic returns the topic of an aggregate's events.
func (r *OutboxRouter) Topic(aggregate string) string { return r.topicPrefix + "." + aggregate }

// DeadLetterTopic returns where malformed outbox events go. outbox.Publish
// refuses the aggregate name "dlq", so no event topic collides with it.
func (r *OutboxRouter) DeadLetterTopic() string { return r.topicPrefix + ".dlq" }

// Message routes a logical decoding message received inside the transaction
// that commits at pos.Commit (pos.Change is the message's LSN).
//
//   - Another prefix (the heartbeat, other tools): ok is false; the message
//     is not the router's business.
//   - An outbox message: the event's Record, ok true.
//   - A malformed or non-transactional outbox message: ok true and an
//     *InvalidOutboxEventError carrying the dead-letter Record.
func (r *OutboxRouter) Message(m *pglogrepl.LogicalDecodingMessage, pos pipeline.Position) (Record, bool, error) {
	if r.prefix == "" || m.Prefix != r.prefix {
		return Record{}, false, nil
	}
	source := "message " + m.Prefix
	if !m.Transactional {
		return Record{}, true, r.deadLetter(pos, source, "", m.Content, errNonTransactional)
	}
	ev, err := outbox.DecodeMessage(m.Content)
	if err != nil {
		return Record{}, true, r.deadLetter(pos, source, ev.AggregateID, m.Content, err)
	}
	return r.record(ev, pos), true, nil
}

// Change routes a change of the outbox table; for any other table ok is
// false and the caller routes the change to its table topic as usual.
//
// Only inserts ('c') are events. Everything else on the outbox table is
// handled by dropping it: ok true and a zero Record (Topic ""), meaning
// "nothing to produce". That covers
//   - deletes and their tombstones: WithDeleteAfterInsert empties the table
//     in the same transaction, and cleaning up old rows is no event;
//   - updates, including the delete+create pair the decoder makes of an
//     update that changes the primary key: an event is immutable once
//     written, as with Debezium's router;
//   - truncates;
//   - snapshot and backfill rows ('r'): they are events whose transactions
//     committed before the slot existed, or that were already published;
//     re-reading the table must not publish them (again).
//
// A malformed row gives ok true and an *InvalidOutboxEventError.
func (r *OutboxRouter) Change(c Change) (Record, bool, error) {
	if !r.IsOutboxTable(c.Schema, c.Table) {
		return Record{}, false, nil
	}
	if c.Event == nil {
		return Record{}, true, nil
	}
	switch c.Event.Op {
	case pipeline.OpCreate:
		if r.sawDelete && r.lastDelete == c.Position {
			// The decoder gives a key-changing update the position of the
			// update for both halves; a real insert has its own WAL record.
			return Record{}, true, nil
		}
	case pipeline.OpDelete:
		r.lastDelete, r.sawDelete = c.Position, true
		return Record{}, true, nil
	default:
		return Record{}, true, nil
	}
	ev, err := rowEvent(c.Event.After)
	if err != nil {
		return Record{}, true, r.deadLetter(c.Position, "table "+c.Schema+"."+c.Table, ev.AggregateID,
			c.Event.AppendJSON(nil), err)
	}
	return r.record(ev, c.Position), true, nil
}

// record builds the Kafka record of a valid event.
func (r *OutboxRouter) record(ev outbox.Event, pos pipeline.Position) Record {
	ct := ev.ContentType
	if ct == "" {
		ct = outbox.ContentTypeJSON
	}
	headers := make([]sarama.RecordHeader, 0, 5+len(ev.Headers))
	headers = append(headers,
		header(HeaderEventID, ev.ID),
		header(HeaderEventType, ev.Type),
		header(HeaderAggregateType, ev.Aggregate),
		header(HeaderContentType, ct),
		header(pipeline.HeaderPosition, pos.String()),
	)
	names := make([]string, 0, len(ev.Headers))
	for name := range ev.Headers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		headers = append(headers, header(name, ev.Headers[name]))
	}
	value := ev.Payload
	if value == nil {
		value = []byte{} // an empty opaque payload, not a tombstone
	}
	return Record{
		Topic:    r.Topic(ev.Aggregate),
		Key:      []byte(ev.AggregateID),
		Value:    value,
		Headers:  headers,
		Position: pos,
	}
}

// deadLetter wraps err with the record that carries the raw event to the
// dead-letter topic.
func (r *OutboxRouter) deadLetter(pos pipeline.Position, source, aggregateID string, raw []byte, err error) error {
	rec := Record{
		Topic: r.DeadLetterTopic(),
		Value: append([]byte{}, raw...), // raw may be the stream's buffer
		Headers: []sarama.RecordHeader{
			header(pipeline.HeaderDLQError, err.Error()),
			header(HeaderOutboxSource, source),
			header(pipeline.HeaderPosition, pos.String()),
		},
		Position: pos,
	}
	if aggregateID != "" {
		rec.Key = []byte(aggregateID)
	}
	return &InvalidOutboxEventError{Err: err, DeadLetter: rec}
}

func header(name, value string) sarama.RecordHeader {
	return sarama.RecordHeader{Key: []byte(name), Value: []byte(value)}
}

// rowEvent reads an event from an outbox-table row as the decoder encodes
// it: text and uuid columns are JSON strings, json and jsonb columns are
// JSON strings holding the JSON text (Debezium's io.debezium.data.Json).
// Numbers are taken as written, so an integer aggregateid column works too.
// Any id the table uses is accepted (Debezium's router does not insist on a
// uuid); the primary key keeps it unique.
func rowEvent(after pipeline.Row) (outbox.Event, error) {
	var ev outbox.Event
	text := func(col string) string {
		v, ok := after.Get(col)
		if !ok || string(v) == "null" {
			return ""
		}
		return pipeline.ScalarText(v)
	}
	ev.ID = text("id")
	ev.Aggregate = text("aggregatetype")
	ev.AggregateID = text("aggregateid")
	ev.Type = text("type")
	if ev.ID == "" {
		return ev, &outbox.ValidationError{Field: "id", Err: outbox.ErrMissingID}
	}
	payload, err := jsonColumn(after, "payload")
	if err != nil {
		return ev, &outbox.ValidationError{ID: ev.ID, Field: "payload", Err: outbox.ErrInvalidPayload, Detail: err.Error()}
	}
	if payload == nil {
		return ev, &outbox.ValidationError{ID: ev.ID, Field: "payload", Err: outbox.ErrInvalidPayload, Detail: "NULL"}
	}
	ev.Payload = payload
	if h, err := jsonColumn(after, "headers"); err != nil {
		return ev, &outbox.ValidationError{ID: ev.ID, Field: "headers", Err: outbox.ErrInvalidHeader, Detail: err.Error()}
	} else if h != nil && string(h) != "null" {
		if ev.Headers, err = headerMap(h); err != nil {
			return ev, &outbox.ValidationError{ID: ev.ID, Field: "headers", Err: outbox.ErrInvalidHeader, Detail: err.Error()}
		}
	}
	id := ev.ID
	ev.ID = "" // see above: Validate would insist on a UUID
	err = ev.Validate()
	ev.ID = id
	return ev, err
}

// jsonColumn returns the JSON document in a json/jsonb (or text) column:
// nil for a missing column or SQL NULL.
func jsonColumn(row pipeline.Row, col string) ([]byte, error) {
	v, ok := row.Get(col)
	if !ok || len(v) == 0 || string(v) == "null" {
		return nil, nil
	}
	if v[0] != '"' {
		return v, nil // already JSON, should a decoder write it natively
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return nil, fmt.Errorf("column %s: %w", col, err)
	}
	return []byte(s), nil
}

// headerMap reads the headers column: a JSON object whose string values are
// used as they are and other values as their JSON text.
func headerMap(doc []byte) (map[string]string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(doc, &raw); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		out[k] = pipeline.ScalarText(v)
	}
	return out, nil
}

package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"

	"github.com/cdcsync/cdcsync/pipeline"
)

// Poison records: changes Kafka will never accept, however often capture
// re-sends them. Restarting the session from the confirmed LSN only meets
// the same change again while the slot pins WAL, so capture either stops at
// the change and says why (CDCSYNC_ON_POISON=stop, the default) or sends a
// small record naming it to <topic>.dlq and moves on (dlq).

// Values of CDCSYNC_ON_POISON.
const (
	onPoisonStop = "stop"
	onPoisonDLQ  = "dlq"
)

// poisonRetry is how long capture waits, stopped on a poison record,
// before it tries again: the fix may be on the broker (a topic's limit),
// but every retry re-reads the WAL up to the record.
const poisonRetry = 5 * time.Minute

// deadLetterSuffix names the dead-letter topic of a table topic, the one the
// sinks use by default (CDCSYNC_DLQ_SUFFIX).
const deadLetterSuffix = ".dlq"

// PoisonError is a change capture cannot deliver. It names the table, the
// key columns (not their values: keys can be personal data too), the
// position, the size and the limit; never row values.
type PoisonError struct {
	Table      string   // schema.table; empty for a logical decoding message
	KeyColumns []string // names of the key columns
	Topic      string
	Position   pipeline.Position
	Op         pipeline.Op
	Size       int // bytes of the message as the producer counts them
	Limit      int // CDCSYNC_KAFKA_MAX_MESSAGE_BYTES
	// Broker is set when the broker, not the producer, refused it: the
	// topic's max.message.bytes is below the producer's limit.
	Broker bool
	// Undecodable holds why the decoder rejected the change (it names
	// the column and its type, never the value); Size and Limit are 0.
	Undecodable string
}

func (e *PoisonError) what() string {
	if e.Table == "" {
		return "message for topic " + e.Topic
	}
	return fmt.Sprintf("change of %s (key columns %s)", e.Table, strings.Join(e.KeyColumns, ", "))
}

func (e *PoisonError) Error() string {
	if e.Broker {
		return fmt.Sprintf("poison record: Kafka refused a batch of topic %s as too large (MESSAGE_TOO_LARGE) at %s: the topic's max.message.bytes is below CDCSYNC_KAFKA_MAX_MESSAGE_BYTES=%d",
			e.Topic, e.Position, e.Limit)
	}
	if e.Undecodable != "" {
		return fmt.Sprintf("poison record: %s at %s cannot be decoded: %s", e.what(), e.Position, e.Undecodable)
	}
	return fmt.Sprintf("poison record: %s at %s is %d bytes, above CDCSYNC_KAFKA_MAX_MESSAGE_BYTES=%d", e.what(), e.Position, e.Size, e.Limit)
}

// Fix says what an operator can do about it.
func (e *PoisonError) Fix() string {
	if e.Broker {
		return fmt.Sprintf("raise max.message.bytes of topic %s to at least %d (kafka-configs --alter --entity-type topics --entity-name %s --add-config max.message.bytes=%d), or lower CDCSYNC_KAFKA_MAX_MESSAGE_BYTES; capture retries every %v",
			e.Topic, e.Limit, e.Topic, e.Limit, poisonRetry)
	}
	if e.Undecodable != "" {
		return fmt.Sprintf("capture cannot read this column type: report it with the type's definition; or set CDCSYNC_ON_POISON=dlq to send its position to %s%s and move on",
			e.Topic, deadLetterSuffix)
	}
	return fmt.Sprintf("raise CDCSYNC_KAFKA_MAX_MESSAGE_BYTES above %d (with max.message.bytes of topic %s and the brokers' and consumers' fetch limits) and restart, or set CDCSYNC_ON_POISON=dlq to send its key and position to %s%s and move on",
		e.Size, e.Topic, e.Topic, deadLetterSuffix)
}

// logAttrs are the fields of the log line about e.
func (e *PoisonError) logAttrs() []any {
	return []any{"table", e.Table, "key_columns", strings.Join(e.KeyColumns, ","), "topic", e.Topic,
		"position", e.Position, "size", e.Size, "limit", e.Limit}
}

// deadLetter is the record sent to <topic>.dlq for rec in place of it: the
// key and position, and why, without the payload that did not fit.
func (e *PoisonError) deadLetter(rec Record) Record {
	reason := e.Error()
	value, _ := json.Marshal(struct {
		Reason     string   `json:"reason"`
		Table      string   `json:"table,omitempty"`
		KeyColumns []string `json:"key_columns,omitempty"`
		Topic      string   `json:"topic"`
		Position   string   `json:"position"`
		Op         string   `json:"op,omitempty"`
		Size       int      `json:"size,omitempty"`
		Limit      int      `json:"limit,omitempty"`
	}{reason, e.Table, e.KeyColumns, e.Topic, e.Position.String(), string(e.Op), e.Size, e.Limit})
	headers := []sarama.RecordHeader{
		{Key: headerPosition, Value: rec.Position.AppendText(nil)},
		{Key: []byte(pipeline.HeaderDLQError), Value: []byte(reason)},
		{Key: []byte(pipeline.HeaderDLQTopic), Value: []byte(rec.Topic)},
		{Key: []byte(pipeline.HeaderDLQSink), Value: []byte("capture")},
	}
	if e.Op != "" {
		headers = append(headers, sarama.RecordHeader{Key: headerOp, Value: opValue(e.Op)})
	}
	return Record{Topic: rec.Topic + deadLetterSuffix, Key: rec.Key, Value: value, Headers: headers, Position: rec.Position}
}

// keyNames names the columns of key.
func keyNames(key pipeline.Row) []string {
	names := make([]string, len(key))
	for i, c := range key {
		names[i] = c.Name
	}
	return names
}

// poison handles a change the producer refused as too large: with dlq its
// dead letter takes its place (acknowledged like any message, so the slot
// moves past it); otherwise the session ends with e and Run stops there.
func (s *stream) poison(ctx context.Context, e *PoisonError, rec Record) error {
	if s.onPoison != onPoisonDLQ {
		return e
	}
	dl := e.deadLetter(rec)
	s.log.Warn("poison record sent to the dead-letter topic (CDCSYNC_ON_POISON=dlq)",
		append(e.logAttrs(), "dead_letter_topic", dl.Topic)...)
	s.metrics.poisonRecords.WithLabelValues(e.Topic, "dead_lettered").Inc()
	return s.prod.send(ctx, dl, s.keepAlive, s.interval)
}

// undecodable returns the poison record for a row change the decoder
// rejected (a value that does not have the form its column type says), or
// nil when err is not about one row's values.
func (s *stream) undecodable(msg pglogrepl.Message, at pglogrepl.LSN, err error) *PoisonError {
	if !errors.Is(err, errBadValue) && !errors.Is(err, ErrBinaryColumn) {
		return nil
	}
	var id uint32
	switch m := msg.(type) {
	case *pglogrepl.InsertMessage:
		id = m.RelationID
	case *pglogrepl.UpdateMessage:
		id = m.RelationID
	case *pglogrepl.DeleteMessage:
		id = m.RelationID
	default:
		return nil
	}
	rel, ok := s.decoder.rels[id]
	if !ok {
		return nil
	}
	keys := make([]string, len(rel.key))
	for i, k := range rel.key {
		keys[i] = rel.cols[k].name
	}
	return &PoisonError{
		Table: rel.schema + "." + rel.table, KeyColumns: keys,
		Topic:    pipeline.Topic(s.decoder.src.Name, rel.schema, rel.table),
		Position: pipeline.Position{Epoch: s.decoder.src.Epoch, Commit: s.txCommit, Change: at}, Undecodable: err.Error(),
	}
}

// poisonGate keeps readiness honest while capture is stopped on a poison
// record: a retried session streams up to the record again, and must not
// report ready meanwhile.
type poisonGate struct {
	Readiness
	stuck atomic.Pointer[PoisonError]
}

// SetReady reports ready unless capture is stopped on a poison record.
func (g *poisonGate) SetReady() {
	if g.stuck.Load() == nil {
		g.Readiness.SetReady()
	}
}

// stop records that capture stopped at e.
func (g *poisonGate) stop(e *PoisonError) {
	g.stuck.Store(e)
	g.Readiness.SetNotReady("stopped on a " + e.Error())
}

// passed reports, once, that the confirmed LSN moved past the poison
// record (its topic's limit was raised and a retry got it through).
func (g *poisonGate) passed(confirmed pglogrepl.LSN) bool {
	e := g.stuck.Load()
	if e == nil || confirmed <= e.Position.Commit {
		return false
	}
	return g.stuck.CompareAndSwap(e, nil)
}

// checkTopicLimit warns when topic accepts less than the producer sends:
// a message between the two limits would stop capture (the broker refuses
// its whole batch). Only warned: the limit is the operator's to change.
func (c *capturer) checkTopicLimit(prod *producer, topic string) {
	limit, err := prod.topicLimit(topic)
	if err != nil {
		c.log.Warn("cannot read the topic's max.message.bytes", "topic", topic, "err", err)
		return
	}
	if limit > 0 && limit < c.cfg.MaxMessageBytes {
		c.log.Warn("topic accepts smaller messages than capture produces: a change between the two sizes would stop capture; raise the topic's max.message.bytes (or lower CDCSYNC_KAFKA_MAX_MESSAGE_BYTES)",
			"topic", topic, "max.message.bytes", limit, "CDCSYNC_KAFKA_MAX_MESSAGE_BYTES", c.cfg.MaxMessageBytes,
			"fix", fmt.Sprintf("kafka-configs --alter --entity-type topics --entity-name %s --add-config max.message.bytes=%d", topic, c.cfg.MaxMessageBytes+batchOverhead))
	}
}

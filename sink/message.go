package sink

import (
	"context"
	"strings"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/pipeline"
	"github.com/cdcsync/cdcsync/pipeline/debezium"
)

// Message is one Kafka record on its way into a sink, with what the
// consumer decoded from it.
type Message struct {
	Raw   *sarama.ConsumerMessage
	Event *pipeline.Event
	// Key holds the primary-key columns; nil for a truncate.
	Key pipeline.Row
	// Err says why the message can never be applied (it wraps
	// errPermanent); such a message goes to the dead-letter topic.
	Err error
	// AlreadyDead is set when Err is and the message's dead letter was
	// written before (a replay over what the daemon dead-lettered): it is
	// not written again.
	AlreadyDead bool
	// Skip is set by the applier when the message changed nothing, to the
	// reason (skipStale, skipTruncated, skipSuperseded); empty when applied.
	Skip string
}

// Applier applies batches of decoded change events to one store.
//
// Apply applies every message of batch in order and returns only when the
// effect is durable. It must be idempotent by position: applying a message
// again, or one older than what the store holds for its key, changes
// nothing. A message that can never be applied gets its Err set and the
// rest of the batch is still applied. A returned error is transient: the
// caller retries the whole batch later, so partial effects are fine.
// Apply is called concurrently for different partitions.
type Applier interface {
	Apply(ctx context.Context, batch []*Message) error
}

// decodeMessage decodes a record. It returns nil for a tombstone (the null
// value that follows a delete so that compaction drops the key). Records
// that cannot be decoded come back with Err set.
func decodeMessage(raw *sarama.ConsumerMessage) *Message {
	if raw.Value == nil || header(raw, pipeline.HeaderControl) != "" {
		// Control records are known by their header: the resnapshot-done
		// record has a value (older captures wrote it null).
		return resnapshotDone(raw)
	}
	m := &Message{Raw: raw}
	// Either encoding: cdcsync's, or Debezium's (whose source has no
	// commit LSN, so the position header supplies it).
	posHeader := header(raw, pipeline.HeaderPosition)
	ev, err := debezium.DecodeEvent(raw.Value, posHeader, header(raw, debezium.HeaderUnchanged))
	if err != nil {
		m.Err = permanentf("%v", err)
		return m
	}
	// The source epoch travels only in the header (none: epoch 0).
	ev.Source.Epoch = pipeline.PositionEpoch(posHeader)
	m.Event = ev
	if ev.Source.CommitLSN == 0 {
		// Without a commit position the event cannot be ordered: the
		// inventory sink would skip it as older than anything, the Redis
		// sink apply the first one and skip the rest.
		m.Err = permanentf("op %q without a position (source.commit_lsn missing or 0)", ev.Op)
		return m
	}
	if ev.Op == pipeline.OpTruncate {
		return m
	}
	if len(raw.Key) == 0 {
		m.Err = permanentf("op %q without a key", ev.Op)
		return m
	}
	if m.Key, err = debezium.DecodeKey(raw.Key); err != nil {
		m.Err = permanentf("key: %v", err)
		return m
	}
	if len(m.Key) == 0 {
		m.Err = permanentf("op %q with an empty key", ev.Op)
	}
	return m
}

// resnapshotDone decodes capture's resnapshot-done control record (see
// pipeline.ResnapshotKey), and returns nil for any other tombstone or
// control record (a newer capture's, which this sink does not know). Both
// sinks apply it as a truncate at the start of its source epoch: the rows
// the re-snapshot re-emitted, and every change since, are after it and
// stay; what the stores hold from older epochs goes, and late events of
// older epochs are skipped. Applying it is idempotent and, like a
// truncate, safe to repeat after a stop in the middle.
func resnapshotDone(raw *sarama.ConsumerMessage) *Message {
	if header(raw, pipeline.HeaderControl) != pipeline.ControlResnapshotDone {
		return nil
	}
	m := &Message{Raw: raw}
	pos, err := pipeline.ParsePosition(header(raw, pipeline.HeaderPosition))
	if err != nil {
		m.Err = permanentf("resnapshot-done record: %v", err)
		return m
	}
	schema, table, ok := strings.Cut(header(raw, pipeline.HeaderTable), ".")
	if !ok {
		m.Err = permanentf("resnapshot-done record: header %s %q: want schema.table", pipeline.HeaderTable, header(raw, pipeline.HeaderTable))
		return m
	}
	ev := &pipeline.Event{Op: pipeline.OpTruncate, Source: pipeline.Source{Schema: schema, Table: table}}
	ev.SetPosition(pos)
	m.Event = ev
	return m
}

// header returns the value of the record header named key, or "".
func header(raw *sarama.ConsumerMessage, key string) string {
	for _, h := range raw.Headers {
		if h != nil && string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

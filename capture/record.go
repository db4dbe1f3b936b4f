package capture

import (
	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/pipeline"
)

// Change is one decoded row change (or truncate) of a captured table, before
// it is encoded for Kafka. The decoder and the snapshot produce Changes;
// routing (table topic or outbox) turns them into Records.
type Change struct {
	Schema, Table string
	// Key holds the primary-key columns; nil for a truncate.
	Key pipeline.Row
	// Event is the envelope; nil means a tombstone for Key (sent after a
	// delete so compacted topics drop the key).
	Event *pipeline.Event
	// Position orders the change in the stream (also in Event.Source).
	Position pipeline.Position
}

// Record is one message ready to produce.
type Record struct {
	Topic    string
	Key      []byte // nil: no key (truncate)
	Value    []byte // nil: tombstone
	Headers  []sarama.RecordHeader
	Position pipeline.Position
}

// size is the record's bytes as the producer holds them until Kafka
// acknowledges it: what CDCSYNC_MAX_IN_FLIGHT_BYTES counts.
func (r Record) size() int {
	n := len(r.Topic) + len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

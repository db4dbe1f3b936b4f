package pipeline

import (
	"encoding/json"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// Checkpoint is capture's checkpoint under exactly-once delivery: the value
// of a record on the compacted topic CheckpointTopic(prefix), keyed by the
// slot, written as the last record of every Kafka transaction capture
// commits. It says how far the stream is on Kafka, read_committed.
type Checkpoint struct {
	Slot  string `json:"slot"`
	Epoch uint32 `json:"epoch"` // source epoch of LSN (Position.Epoch)
	// LSN is the end of the last unit of the stream on Kafka: the end
	// LSN of a Postgres transaction (its commit record's end) or the LSN
	// of a non-transactional logical message. Every unit that ends at or
	// before it is on Kafka, in a committed transaction.
	LSN pglogrepl.LSN `json:"-"`
	// Backfills holds the progress of backfills whose chunks are on
	// Kafka (committed with them), by backfill id.
	Backfills map[int64]BackfillMark `json:"backfills,omitempty"`
}

// BackfillMark is how far a backfill is, as its chunks on Kafka say.
type BackfillMark struct {
	LastKey     []string `json:"last_key"`
	ChunksDone  int64    `json:"chunks_done"`
	RowsDone    int64    `json:"rows_done"`
	RowsSkipped int64    `json:"rows_skipped"`
}

// CheckpointTopic is the checkpoint topic of table topics under prefix.
func CheckpointTopic(prefix string) string { return prefix + ".capture.checkpoint" }

// checkpointJSON carries LSN in Postgres' text form, for people reading
// the topic.
type checkpointJSON struct {
	Checkpoint
	LSNText string `json:"lsn"`
}

// Encode returns the record value.
func (c Checkpoint) Encode() ([]byte, error) {
	b, err := json.Marshal(checkpointJSON{Checkpoint: c, LSNText: c.LSN.String()})
	if err != nil {
		return nil, fmt.Errorf("encode checkpoint: %w", err)
	}
	return b, nil
}

// DecodeCheckpoint reads a record value written by Encode.
func DecodeCheckpoint(b []byte) (Checkpoint, error) {
	var j checkpointJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Checkpoint{}, fmt.Errorf("decode checkpoint: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(j.LSNText)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("decode checkpoint: lsn: %w", err)
	}
	j.Checkpoint.LSN = lsn
	return j.Checkpoint, nil
}

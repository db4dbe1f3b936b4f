package capture

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"

	"github.com/cdcsync/cdcsync/internal/kafkaclient"
)

// The checkpoint of exactly-once delivery: a record on the compacted topic
// <prefix>.capture.checkpoint, keyed by the slot, written as the last
// record of every Kafka transaction capture commits. It says how far the
// stream is on Kafka, read_committed: a restarted capture drops what the
// slot sends again up to it, instead of writing it a second time.

// checkpointSuffix names the checkpoint topic after the table topics' prefix.
const checkpointSuffix = ".capture.checkpoint"

// checkpointTopic is the checkpoint topic of table topics under prefix.
func checkpointTopic(prefix string) string { return prefix + checkpointSuffix }

// checkpoint is the value of a checkpoint record.
type checkpoint struct {
	Slot  string `json:"slot"`
	Epoch uint32 `json:"epoch"` // source epoch of LSN (pipeline.Position)
	// LSN is the end of the last unit of the stream on Kafka: the end
	// LSN of a Postgres transaction (its commit record's end) or the LSN
	// of a non-transactional logical message. Every unit that ends at or
	// before it is on Kafka, in a committed transaction.
	LSN pglogrepl.LSN `json:"-"`
	// LSNText is LSN in Postgres' text form, for people reading the topic.
	LSNText string `json:"lsn"`
	// Backfills holds the progress of backfills whose chunks are on
	// Kafka (committed with them), by backfill id.
	Backfills map[int64]backfillMark `json:"backfills,omitempty"`
}

// backfillMark is how far a backfill is, as its chunks on Kafka say.
type backfillMark struct {
	LastKey     []string `json:"last_key"`
	ChunksDone  int64    `json:"chunks_done"`
	RowsDone    int64    `json:"rows_done"`
	RowsSkipped int64    `json:"rows_skipped"`
}

func (c checkpoint) encode() ([]byte, error) {
	c.LSNText = c.LSN.String()
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode checkpoint: %w", err)
	}
	return b, nil
}

func decodeCheckpoint(b []byte) (checkpoint, error) {
	var c checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("decode checkpoint: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(c.LSNText)
	if err != nil {
		return c, fmt.Errorf("decode checkpoint: lsn: %w", err)
	}
	c.LSN = lsn
	return c, nil
}

// checkpointWindow is how many offsets before the end of the checkpoint
// topic the first read looks at; it doubles until the slot's latest
// checkpoint is found or the topic's start is reached. Other slots with
// the same prefix share the topic.
const checkpointWindow = 512

// readCheckpoint returns the latest committed checkpoint of slot on topic,
// read read_committed, and false when there is none. The topic has one
// partition.
func readCheckpoint(client sarama.Client, topic, slot string) (checkpoint, bool, error) {
	end, err := kafkaclient.StableOffset(client, topic, 0)
	if err != nil {
		return checkpoint{}, false, fmt.Errorf("read checkpoint: %w", err)
	}
	oldest, err := client.GetOffset(topic, 0, sarama.OffsetOldest)
	if err != nil {
		return checkpoint{}, false, fmt.Errorf("read checkpoint: oldest offset of %s: %w", topic, err)
	}
	window := int64(checkpointWindow)
	upTo := end
	for upTo > oldest {
		from := max(oldest, upTo-window)
		value, found, err := lastCommitted(client, topic, []byte(slot), from, upTo)
		if err != nil {
			return checkpoint{}, false, err
		}
		if found {
			c, err := decodeCheckpoint(value)
			return c, err == nil, err
		}
		upTo, window = from, window*2
	}
	return checkpoint{}, false, nil
}

// lastCommitted returns the value of the last record with key among the
// committed ones at offsets [from, to) of partition 0 of topic.
func lastCommitted(client sarama.Client, topic string, key []byte, from, to int64) ([]byte, bool, error) {
	var value []byte
	found := false
	err := kafkaclient.ReadCommitted(client, topic, 0, from, to, func(_ int64, _ *sarama.RecordBatch, r *sarama.Record) bool {
		if bytes.Equal(r.Key, key) {
			value, found = r.Value, true
		}
		return true
	})
	if err != nil {
		return nil, false, fmt.Errorf("read checkpoint: %w", err)
	}
	return value, found, nil
}

// readCheckpoint creates the checkpoint topic if needed and reads the
// slot's checkpoint (exactly-once delivery only): the stream resumes after
// its LSN. Without a checkpoint, or with one from another
// source epoch (its LSNs are of another history): the zero checkpoint.
func (c *capturer) readCheckpoint(prod *producer, epoch uint32) (checkpoint, error) {
	if prod.txn == nil {
		return checkpoint{}, nil
	}
	topic := checkpointTopic(c.cfg.TopicPrefix)
	compact := "compact"
	detail := sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: c.cfg.TopicReplication,
		ConfigEntries: map[string]*string{"cleanup.policy": &compact}}
	if _, err := prod.create(topic, detail); err != nil {
		return checkpoint{}, err
	}
	cp, found, err := readCheckpoint(prod.client, topic, c.cfg.Slot)
	if err != nil {
		return checkpoint{}, err
	}
	switch {
	case !found:
		c.log.Info("exactly-once: no checkpoint on Kafka yet", "topic", topic, "slot", c.cfg.Slot)
		return checkpoint{}, nil
	case cp.Epoch != epoch:
		c.log.Info("exactly-once: the checkpoint is of another source epoch; ignored", "checkpoint_epoch", cp.Epoch, "epoch", epoch)
		return checkpoint{}, nil
	}
	prod.txn.resume(cp)
	c.metrics.checkpointLSN.Set(float64(cp.LSN))
	c.log.Info("exactly-once: resuming after the Kafka checkpoint", "lsn", cp.LSN, "source_epoch", cp.Epoch)
	return cp, nil
}

package capture

import (
	"fmt"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/internal/kafkaclient"
	"github.com/cdcsync/cdcsync/pipeline"
)

// The checkpoint of exactly-once delivery (pipeline.Checkpoint): a record
// on the compacted topic <prefix>.capture.checkpoint, keyed by the slot,
// written as the last record of every Kafka transaction capture commits. A
// restarted capture drops what the slot sends again up to it, instead of
// writing it a second time.

// readCheckpoint creates the checkpoint topic if needed and reads the
// slot's checkpoint (exactly-once delivery only): the stream resumes after
// its LSN. Without a checkpoint, or with one from another source epoch
// (its LSNs are of another history), it returns the zero checkpoint.
func (c *capturer) readCheckpoint(prod *producer, epoch uint32) (pipeline.Checkpoint, error) {
	if prod.txn == nil {
		return pipeline.Checkpoint{}, nil
	}
	topic := pipeline.CheckpointTopic(c.cfg.TopicPrefix)
	// Every Kafka transaction adds a record: segments roll hourly (not
	// weekly, the default) so that compaction, which skips the active
	// segment, keeps the topic to about one record per slot.
	compact, hourly := "compact", "3600000"
	detail := sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: c.cfg.TopicReplication,
		ConfigEntries: map[string]*string{"cleanup.policy": &compact, "segment.ms": &hourly}}
	if _, err := prod.create(topic, detail); err != nil {
		return pipeline.Checkpoint{}, err
	}
	cp, found, err := ReadCheckpoint(prod.client, c.cfg.TopicPrefix, c.cfg.Slot)
	if err != nil {
		return pipeline.Checkpoint{}, err
	}
	switch {
	case !found:
		c.log.Info("exactly-once: no checkpoint on Kafka yet", "topic", topic, "slot", c.cfg.Slot)
		return pipeline.Checkpoint{}, nil
	case cp.Epoch != epoch:
		c.log.Info("exactly-once: the checkpoint is of another source epoch; ignored", "checkpoint_epoch", cp.Epoch, "epoch", epoch)
		return pipeline.Checkpoint{}, nil
	}
	prod.txn.resume(cp)
	c.metrics.checkpointLSN.Set(float64(cp.LSN))
	c.log.Info("exactly-once: resuming after the Kafka checkpoint", "lsn", cp.LSN, "source_epoch", cp.Epoch)
	return cp, nil
}

// ReadCheckpoint returns the latest committed checkpoint of slot under the
// topic prefix, and false when there is none (at-least-once delivery, or
// nothing committed yet).
func ReadCheckpoint(client sarama.Client, prefix, slot string) (pipeline.Checkpoint, bool, error) {
	topic := pipeline.CheckpointTopic(prefix)
	value, found, err := kafkaclient.LastCommittedValue(client, topic, 0, []byte(slot))
	if err != nil || !found {
		if err != nil {
			err = fmt.Errorf("read checkpoint: %w", err)
		}
		return pipeline.Checkpoint{}, false, err
	}
	cp, err := pipeline.DecodeCheckpoint(value)
	return cp, err == nil, err
}

package kafkaclient

import (
	"errors"
	"fmt"

	"github.com/IBM/sarama"
)

// StableOffset returns the last stable offset of a partition: the end of
// what a read_committed reader can read now. It is the high watermark
// unless a transaction is open on the partition, where it stops at the
// first record of the oldest open transaction. sarama's GetOffset asks
// read_uncommitted, so a reader that reads up to its answer would wait
// for records it may never see.
func StableOffset(client sarama.Client, topic string, partition int32) (int64, error) {
	broker, err := client.Leader(topic, partition)
	if err != nil {
		return -1, fmt.Errorf("leader of %s/%d: %w", topic, partition, err)
	}
	req := sarama.NewOffsetRequest(client.Config().Version)
	req.IsolationLevel = sarama.ReadCommitted
	req.AddBlock(topic, partition, sarama.OffsetNewest, 1)
	resp, err := broker.GetAvailableOffsets(req)
	if err != nil {
		return -1, fmt.Errorf("list offsets of %s/%d: %w", topic, partition, err)
	}
	block := resp.GetBlock(topic, partition)
	if block == nil {
		return -1, fmt.Errorf("list offsets of %s/%d: %w", topic, partition, sarama.ErrIncompleteResponse)
	}
	if !errors.Is(block.Err, sarama.ErrNoError) {
		return -1, fmt.Errorf("list offsets of %s/%d: %w", topic, partition, block.Err)
	}
	if len(block.Offsets) == 1 {
		return block.Offsets[0], nil
	}
	return block.Offset, nil
}

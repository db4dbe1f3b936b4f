package demo

import (
	"errors"
	"fmt"
	"sync"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/kafkaclient"
)

// eventCounter counts the records of a topic that a read_committed
// consumer is handed, reading only what was added since the last count.
// End offsets do not count records on an exactly-once topic: every Kafka
// transaction leaves a commit marker at an offset of its own (the demo's
// 1,450 OrderCreated events once showed as 2,648).
type eventCounter struct {
	client sarama.Client
	topic  string

	mu   sync.Mutex
	next map[int32]int64 // by partition: the offset after what was counted
	n    int64
}

func newEventCounter(k config.Kafka, topic string) (*eventCounter, error) {
	sc, err := kafkaclient.Config(k)
	if err != nil {
		return nil, err
	}
	client, err := sarama.NewClient(k.Brokers, sc)
	if err != nil {
		return nil, fmt.Errorf("connect to kafka: %w", err)
	}
	return &eventCounter{client: client, topic: topic, next: map[int32]int64{}}, nil
}

// count returns the records of the topic visible read_committed now (0
// while the topic does not exist).
func (c *eventCounter) count() (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.client.RefreshMetadata(c.topic); errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return c.n, nil
	} else if err != nil {
		return c.n, fmt.Errorf("kafka metadata of %s: %w", c.topic, err)
	}
	parts, err := c.client.Partitions(c.topic)
	if err != nil {
		return c.n, fmt.Errorf("partitions of %s: %w", c.topic, err)
	}
	for _, p := range parts {
		from, ok := c.next[p]
		if !ok {
			if from, err = c.client.GetOffset(c.topic, p, sarama.OffsetOldest); err != nil {
				return c.n, fmt.Errorf("start offset of %s/%d: %w", c.topic, p, err)
			}
		}
		end, err := kafkaclient.StableOffset(c.client, c.topic, p)
		if err != nil {
			return c.n, err
		}
		if end <= from {
			continue
		}
		err = kafkaclient.ReadCommitted(c.client, c.topic, p, from, end, func(int64, *sarama.RecordBatch, *sarama.Record) bool {
			c.n++
			return true
		})
		if err != nil {
			return c.n, err
		}
		c.next[p] = end
	}
	return c.n, nil
}

func (c *eventCounter) close() { _ = c.client.Close() }

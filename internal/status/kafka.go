package status

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/internal/kafkaclient"
)

// Topic reads the start and end offsets of every partition of topic. A
// topic that does not exist (yet) is reported with Exists false.
func (c *Collector) Topic(ctx context.Context, topic string) (Topic, error) {
	t := Topic{Name: topic}
	if err := ctx.Err(); err != nil {
		return t, err
	}
	// Fresh metadata: partitions may have been added, or the topic created
	// since the last call.
	if err := c.client.RefreshMetadata(topic); err != nil {
		if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			return t, nil
		}
		return t, fmt.Errorf("kafka metadata of %s: %w", topic, err)
	}
	parts, err := c.client.Partitions(topic)
	if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return t, nil
	}
	if err != nil {
		return t, fmt.Errorf("partitions of %s: %w", topic, err)
	}
	slices.Sort(parts)
	t.Exists = true
	for _, p := range parts {
		start, err := c.client.GetOffset(topic, p, sarama.OffsetOldest)
		if err != nil {
			return t, fmt.Errorf("start offset of %s/%d: %w", topic, p, err)
		}
		end, err := kafkaclient.StableOffset(c.client, topic, p) // what read_committed sinks can reach
		if err != nil {
			return t, fmt.Errorf("end offset of %s/%d: %w", topic, p, err)
		}
		t.Partitions = append(t.Partitions, Partition{Partition: p, Start: start, End: end})
	}
	return t, nil
}

// sink reads the committed offsets of a sink's consumer group on its
// topics, as they are in topics.
func (c *Collector) sink(ctx context.Context, name string, topics map[string]Topic) (Sink, error) {
	s := Sink{Name: name, Group: c.cfg.GroupPrefix + "-" + name}
	if err := ctx.Err(); err != nil {
		return s, err
	}
	req := map[string][]int32{}
	for _, topic := range c.sinkTopics[name] {
		for _, p := range topics[topic].Partitions {
			req[topic] = append(req[topic], p.Partition)
		}
	}
	if len(req) == 0 {
		return s, nil // no topic exists yet: nothing to lag behind
	}
	resp, err := c.admin.ListConsumerGroupOffsets(s.Group, req)
	if errors.Is(err, sarama.ErrGroupIDNotFound) {
		// Some brokers answer so for a group that never committed.
		resp, err = nil, nil
	}
	if err != nil {
		return s, fmt.Errorf("committed offsets of group %s: %w", s.Group, err)
	}
	for _, topic := range c.sinkTopics[name] {
		for _, p := range topics[topic].Partitions {
			sp := SinkPartition{Topic: topic, Partition: p.Partition, End: p.End}
			from := p.Start // a group without a commit starts at the oldest record
			var b *sarama.OffsetFetchResponseBlock
			if resp != nil {
				b = resp.GetBlock(topic, p.Partition)
			}
			if b != nil {
				if !errors.Is(b.Err, sarama.ErrNoError) {
					return s, fmt.Errorf("committed offset of group %s on %s/%d: %w", s.Group, topic, p.Partition, b.Err)
				}
				if b.Offset >= 0 {
					off := b.Offset
					sp.Committed = &off
					from = max(off, p.Start)
				}
			}
			sp.Lag = max(p.End-from, 0)
			s.Lag += sp.Lag
			s.Partitions = append(s.Partitions, sp)
		}
	}
	return s, nil
}

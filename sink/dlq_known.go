package sink

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/internal/kafkaclient"
	"github.com/cdcsync/cdcsync/pipeline"
)

// origin identifies the message a dead letter came from, and which sink
// dead-lettered it.
func origin(sink, topic string, partition int32, offset int64) string {
	return sink + "\x00" + topic + "\x00" + strconv.FormatInt(int64(partition), 10) + "\x00" + strconv.FormatInt(offset, 10)
}

// dropKnown returns the messages whose origin has no dead letter from this
// sink in its dead-letter topic yet, and marks the others AlreadyDead.
// Only replay asks for this (deadLetters.dedupe): it re-applies ranges the
// daemon already went through, and must not write their dead letters
// again. The daemon writes each at most once per delivery, so it does not
// pay for reading the topic.
func (d *deadLetters) dropKnown(msgs []*Message) ([]*Message, error) {
	out := msgs[:0:0]
	for _, m := range msgs {
		topic := m.Raw.Topic + d.suffix
		known, err := d.knownIn(topic)
		if err != nil {
			return nil, err
		}
		if known[origin(d.sink, m.Raw.Topic, m.Raw.Partition, m.Raw.Offset)] {
			m.AlreadyDead = true
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

// remember adds written dead letters to the known origins.
func (d *deadLetters) remember(msgs []*Message) {
	for _, m := range msgs {
		if known := d.known[m.Raw.Topic+d.suffix]; known != nil {
			known[origin(d.sink, m.Raw.Topic, m.Raw.Partition, m.Raw.Offset)] = true
		}
	}
}

// knownIn reads, once, the origins of every dead letter in topic.
func (d *deadLetters) knownIn(topic string) (map[string]bool, error) {
	if known, ok := d.known[topic]; ok {
		return known, nil
	}
	known, err := readOrigins(d.client, topic)
	if err != nil {
		return nil, fmt.Errorf("read the dead letters already in %s: %w", topic, err)
	}
	d.known[topic] = known
	return known, nil
}

// readOrigins reads a dead-letter topic read_committed up to its last
// stable offsets and returns the origins its records name in their
// headers. Capture writes its poison records to the same topics, with
// exactly-once delivery inside Kafka transactions, so a partition may end
// with a transaction marker (an offset no consumer is handed) or hold
// aborted records: kafkaclient.ReadCommitted steps over both.
func readOrigins(client sarama.Client, topic string) (map[string]bool, error) {
	known := map[string]bool{}
	parts, err := client.Partitions(topic)
	if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return known, nil // nothing was ever dead-lettered there
	}
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
		if err != nil {
			return nil, err
		}
		end, err := kafkaclient.StableOffset(client, topic, p) // read_committed reads no further
		if err != nil {
			return nil, err
		}
		err = kafkaclient.ReadCommitted(client, topic, p, oldest, end, func(_ int64, _ *sarama.RecordBatch, r *sarama.Record) bool {
			h := map[string]string{}
			for _, rh := range r.Headers {
				h[string(rh.Key)] = string(rh.Value)
			}
			part, perr := strconv.ParseInt(h[pipeline.HeaderDLQPartition], 10, 32)
			off, oerr := strconv.ParseInt(h[pipeline.HeaderDLQOffset], 10, 64)
			if perr == nil && oerr == nil {
				known[origin(h[pipeline.HeaderDLQSink], h[pipeline.HeaderDLQTopic], int32(part), off)] = true
			}
			return true
		})
		if err != nil {
			return nil, fmt.Errorf("partition %d: %w", p, err)
		}
	}
	return known, nil
}

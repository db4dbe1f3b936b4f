package testenv

import (
	"testing"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/internal/kafkaclient"
)

// ConsumeTopic hands every record of topic that a read_committed consumer
// sees now to fn, partition by partition, in offset order: each partition
// is read up to its last stable offset, stepping over transaction markers
// and the records of aborted transactions (kafkaclient.ReadCommitted).
// Exactly-once topics end with a commit marker, an offset no consumer is
// handed, so reading "up to the high watermark - 1" would wait forever.
func ConsumeTopic(tb testing.TB, brokers []string, topic string, fn func(*sarama.ConsumerMessage)) {
	tb.Helper()
	if err := consume(tb, brokers, topic, fn); err != nil {
		tb.Fatalf("partitions of %s: %v", topic, err)
	}
}

// consume is ConsumeTopic, returning the error of a topic that does not
// exist (or whose partitions are unknown).
func consume(tb testing.TB, brokers []string, topic string, fn func(*sarama.ConsumerMessage)) error {
	tb.Helper()
	client, err := sarama.NewClient(brokers, SaramaConfig())
	if err != nil {
		tb.Fatalf("kafka client: %v", err)
	}
	defer client.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := EachCommitted(client, topic, p, fn); err != nil {
			tb.Fatal(err)
		}
	}
	return nil
}

// EachCommitted hands fn every record of one partition that a
// read_committed consumer sees now, from the oldest offset to the last
// stable offset, as a consumer message.
func EachCommitted(client sarama.Client, topic string, p int32, fn func(*sarama.ConsumerMessage)) error {
	start, err := client.GetOffset(topic, p, sarama.OffsetOldest)
	if err != nil {
		return err
	}
	end, err := kafkaclient.StableOffset(client, topic, p)
	if err != nil {
		return err
	}
	return kafkaclient.ReadCommitted(client, topic, p, start, end, func(off int64, b *sarama.RecordBatch, r *sarama.Record) bool {
		fn(ConsumerMessage(topic, p, off, b, r))
		return true
	})
}

// ConsumerMessage turns a record read by kafkaclient.ReadCommitted into
// the message sarama's consumer would hand out.
func ConsumerMessage(topic string, p int32, offset int64, b *sarama.RecordBatch, r *sarama.Record) *sarama.ConsumerMessage {
	m := &sarama.ConsumerMessage{
		Topic: topic, Partition: p, Offset: offset, Key: r.Key, Value: r.Value, Headers: r.Headers,
		BlockTimestamp: b.MaxTimestamp, Timestamp: b.FirstTimestamp.Add(r.TimestampDelta),
	}
	if b.LogAppendTime {
		m.Timestamp = b.MaxTimestamp
	}
	return m
}

// CommittedCount returns how many records of topic a read_committed
// consumer sees now (transaction markers and aborted records are not
// counted; 0 when the topic does not exist).
func CommittedCount(tb testing.TB, brokers []string, topic string) int64 {
	tb.Helper()
	var n int64
	_ = consume(tb, brokers, topic, func(*sarama.ConsumerMessage) { n++ })
	return n
}

package testenv

import (
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// ConsumeTopic hands every record of topic present now to fn, partition by
// partition, in offset order.
func ConsumeTopic(tb testing.TB, brokers []string, topic string, fn func(*sarama.ConsumerMessage)) {
	tb.Helper()
	client, err := sarama.NewClient(brokers, SaramaConfig())
	if err != nil {
		tb.Fatalf("kafka client: %v", err)
	}
	defer client.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		tb.Fatalf("partitions of %s: %v", topic, err)
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		tb.Fatal(err)
	}
	defer consumer.Close()
	for _, p := range parts {
		end, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			tb.Fatal(err)
		}
		if end == 0 {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			tb.Fatal(err)
		}
		for {
			var m *sarama.ConsumerMessage
			select {
			case m = <-pc.Messages():
			case <-time.After(30 * time.Second):
				tb.Fatalf("timed out reading %s/%d", topic, p)
			}
			fn(m)
			if m.Offset+1 >= end {
				break
			}
		}
		pc.Close()
	}
}

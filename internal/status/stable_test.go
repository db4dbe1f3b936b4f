package status

import (
	"context"
	"testing"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// TestTopicEndIsTheLastStableOffset: with a Kafka transaction open on a
// topic (exactly-once capture), its records are not readable by the
// read_committed sinks yet, so the end status reports (and lag is
// measured against) is the last stable offset, not the high watermark.
func TestTopicEndIsTheLastStableOffset(t *testing.T) {
	f := newFixture(t)
	if err := f.e.Kafka.CreateTopic(f.orders, 1); err != nil {
		t.Fatal(err)
	}
	sc := testenv.SaramaConfig()
	sc.Producer.Idempotent = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.Transaction.ID = testenv.RandomName("txn")
	sc.Net.MaxOpenRequests = 1
	producer, err := sarama.NewSyncProducer(f.e.Kafka.Brokers(), sc)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	if err := producer.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"a", "b"} {
		if _, _, err := producer.SendMessage(&sarama.ProducerMessage{Topic: f.orders, Value: sarama.StringEncoder(v)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := producer.CommitTxn(); err != nil {
		t.Fatal(err)
	}
	if err := producer.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := producer.SendMessage(&sarama.ProducerMessage{Topic: f.orders, Value: sarama.StringEncoder("open")}); err != nil {
		t.Fatal(err)
	}

	c, err := New(context.Background(), f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	top, err := c.Topic(context.Background(), f.orders)
	if err != nil {
		t.Fatal(err)
	}
	// a, b and the commit marker are stable; "open" is not.
	if len(top.Partitions) != 1 || top.Partitions[0].End != 3 {
		t.Fatalf("partitions %+v, want one ending at the last stable offset 3", top.Partitions)
	}
}

package kafkaclient

import (
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestReadersSeeOnlyCommittedTransactions: a topic written by a
// transactional producer holds records of transactions still open (or
// aborted); readers configured by Config read read_committed, and
// StableOffset (the last stable offset) is where they can read up to, not
// the high watermark, so lag and "read to the end" never wait for records
// that may never become visible.
func TestReadersSeeOnlyCommittedTransactions(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "txn-test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()

	pc, err := Config(kafkaConfig(brokers))
	if err != nil {
		t.Fatal(err)
	}
	pc.Producer.Idempotent = true
	pc.Producer.RequiredAcks = sarama.WaitForAll
	pc.Producer.Return.Successes = true
	pc.Producer.Transaction.ID = "stable-test"
	pc.Net.MaxOpenRequests = 1
	producer, err := sarama.NewSyncProducer(brokers, pc)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	send := func(values ...string) {
		t.Helper()
		if err := producer.BeginTxn(); err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if _, _, err := producer.SendMessage(&sarama.ProducerMessage{Topic: "txn-test", Value: sarama.StringEncoder(v)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	send("a", "b")
	if err := producer.CommitTxn(); err != nil {
		t.Fatal(err)
	}
	send("aborted")
	if err := producer.AbortTxn(); err != nil {
		t.Fatal(err)
	}
	send("c")
	if err := producer.CommitTxn(); err != nil {
		t.Fatal(err)
	}
	send("open", "still open") // left open

	sc, err := Config(kafkaConfig(brokers))
	if err != nil {
		t.Fatal(err)
	}
	client, err := sarama.NewClient(brokers, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	hw, err := client.GetOffset("txn-test", 0, sarama.OffsetNewest)
	if err != nil {
		t.Fatal(err)
	}
	stable, err := StableOffset(client, "txn-test", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("high watermark %d, last stable offset %d", hw, stable)
	if stable >= hw {
		t.Fatalf("stable offset %d not below the high watermark %d with a transaction open", stable, hw)
	}

	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	pcons, err := consumer.ConsumePartition("txn-test", 0, sarama.OffsetOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer pcons.Close()
	var got []string
	for len(got) < 3 {
		select {
		case m := <-pcons.Messages():
			if m.Offset >= stable {
				t.Fatalf("read %q at offset %d, at or past the stable offset %d", m.Value, m.Offset, stable)
			}
			got = append(got, string(m.Value))
		case <-time.After(10 * time.Second):
			t.Fatalf("read %v, want a b c", got)
		}
	}
	select {
	case m := <-pcons.Messages():
		t.Fatalf("read %q of an aborted or open transaction", m.Value)
	case <-time.After(time.Second):
	}
	if got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Fatalf("read %v, want a b c", got)
	}
}

package sink

import (
	"fmt"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestReplayReadsExactlyOnceDeadLetters: capture writes its poison
// records (CDCSYNC_ON_POISON=dlq) to the same <topic>.dlq as the sinks, and
// with exactly-once delivery inside its Kafka transactions, so partitions of
// the dead-letter topic end with a commit marker, an offset no consumer is
// handed. A replay reads the topic's dead letters first (dropKnown): it
// must stop at the markers, not wait for a record at "end - 1" until its
// timeout.
func TestReplayReadsExactlyOnceDeadLetters(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 10, onHand: 100})
	cfg := h.config(config.SinkRedis)
	dlq := h.topic + ".dlq"
	h.produce([]record{orderRecord(pipeline.OpCreate, at(100, 95), 1, 1, 1, "created")})
	m := &sarama.ProducerMessage{Topic: h.topic, Key: sarama.StringEncoder(`{"id":901}`), Value: sarama.StringEncoder("not an event")}
	if _, _, err := h.prod.SendMessage(m); err != nil {
		t.Fatal(err)
	}
	s := h.start(cfg)
	h.waitApplied(30*time.Second, h.groups(config.SinkRedis)...)
	s.stop(t)
	if dead := h.readAll(dlq, 1, 30*time.Second); len(dead) != 1 {
		t.Fatalf("the daemon wrote %d dead letters, want 1", len(dead))
	}
	commitToEveryPartition(t, h.kafka.Brokers(), dlq)

	started := time.Now()
	stats, _ := h.replay(cfg, config.SinkRedis, Beginning(), End())
	if stats.DeadLettered != 0 || stats.AlreadyDeadLettered != 1 {
		t.Errorf("replay: %d dead-lettered, %d already dead-lettered; want 0 and 1", stats.DeadLettered, stats.AlreadyDeadLettered)
	}
	if took := time.Since(started); took > 15*time.Second {
		t.Errorf("replay took %v: it waited for the dead-letter topic's transaction markers", took)
	}
}

// commitToEveryPartition writes one record to each partition of topic in a
// committed Kafka transaction, as capture does with exactly-once delivery.
func commitToEveryPartition(t *testing.T, brokers []string, topic string) {
	t.Helper()
	pc := testenv.SaramaConfig()
	pc.Producer.Idempotent = true
	pc.Producer.RequiredAcks = sarama.WaitForAll
	pc.Producer.Return.Successes = true
	pc.Producer.Transaction.ID = testenv.RandomName("capture")
	pc.Producer.Partitioner = sarama.NewManualPartitioner
	pc.Net.MaxOpenRequests = 1
	producer, err := sarama.NewSyncProducer(brokers, pc)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	client, err := sarama.NewClient(brokers, testenv.SaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := producer.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		m := &sarama.ProducerMessage{Topic: topic, Partition: p, Key: sarama.StringEncoder(fmt.Sprintf(`{"id":%d}`, 990+p)), Value: sarama.StringEncoder(`{"reason":"poison"}`)}
		if _, _, err := producer.SendMessage(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := producer.CommitTxn(); err != nil {
		t.Fatal(err)
	}
}

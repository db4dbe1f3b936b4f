package sink

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/kafkaclient"
	"github.com/cdcsync/cdcsync/pipeline"
)

// maxDLQErrorLen caps the error header: it is for a human, and some errors
// quote the offending input.
const maxDLQErrorLen = 1000

// deadLetters writes messages that can never be applied to <topic><suffix>
// with the reason and the origin in headers. It connects on first use:
// most runs never dead-letter anything.
type deadLetters struct {
	kafka  config.Kafka
	suffix string
	sink   string
	log    *slog.Logger

	mu       sync.Mutex
	client   sarama.Client
	producer sarama.SyncProducer
	created  map[string]bool // dead-letter topics known to exist
}

func newDeadLetters(k config.Kafka, suffix, sink string, log *slog.Logger) *deadLetters {
	return &deadLetters{kafka: k, suffix: suffix, sink: sink, log: log, created: map[string]bool{}}
}

// send writes msgs (all with Err set) and returns once the brokers have
// acknowledged every one (acks=all); an error means some may not have been
// written and the caller must retry before moving past them.
func (d *deadLetters) send(msgs []*Message) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.connect(); err != nil {
		return err
	}
	out := make([]*sarama.ProducerMessage, 0, len(msgs))
	for _, m := range msgs {
		topic := m.Raw.Topic + d.suffix
		d.ensureTopic(topic)
		out = append(out, d.record(topic, m))
	}
	if err := d.producer.SendMessages(out); err != nil {
		// A failed producer may hold broken connections; start afresh.
		d.closeLocked()
		return fmt.Errorf("write dead letters: %w", err)
	}
	return nil
}

func (d *deadLetters) record(topic string, m *Message) *sarama.ProducerMessage {
	reason := m.Err.Error()
	if len(reason) > maxDLQErrorLen {
		reason = reason[:maxDLQErrorLen]
	}
	headers := make([]sarama.RecordHeader, 0, len(m.Raw.Headers)+5)
	for _, h := range m.Raw.Headers {
		if h != nil {
			headers = append(headers, *h)
		}
	}
	headers = append(headers,
		sarama.RecordHeader{Key: []byte(pipeline.HeaderDLQError), Value: []byte(reason)},
		sarama.RecordHeader{Key: []byte(pipeline.HeaderDLQTopic), Value: []byte(m.Raw.Topic)},
		sarama.RecordHeader{Key: []byte(pipeline.HeaderDLQPartition), Value: []byte(strconv.FormatInt(int64(m.Raw.Partition), 10))},
		sarama.RecordHeader{Key: []byte(pipeline.HeaderDLQOffset), Value: []byte(strconv.FormatInt(m.Raw.Offset, 10))},
		sarama.RecordHeader{Key: []byte(pipeline.HeaderDLQSink), Value: []byte(d.sink)},
	)
	pm := &sarama.ProducerMessage{Topic: topic, Headers: headers}
	if m.Raw.Key != nil {
		pm.Key = sarama.ByteEncoder(m.Raw.Key)
	}
	if m.Raw.Value != nil {
		pm.Value = sarama.ByteEncoder(m.Raw.Value)
	}
	return pm
}

func (d *deadLetters) connect() error {
	if d.producer != nil {
		return nil
	}
	sc, err := kafkaclient.Config(d.kafka)
	if err != nil {
		return err
	}
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1
	sc.Producer.Retry.Max = 5
	sc.Producer.Partitioner = sarama.NewHashPartitioner
	sc.Metadata.AllowAutoTopicCreation = false
	client, err := sarama.NewClient(d.kafka.Brokers, sc)
	if err != nil {
		return fmt.Errorf("connect to kafka for dead letters: %w", err)
	}
	p, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		client.Close()
		return fmt.Errorf("dead-letter producer: %w", err)
	}
	d.client, d.producer = client, p
	return nil
}

// ensureTopic creates a dead-letter topic with one partition (keeping dead
// letters in order) and the broker's default replication. Failing to create
// it is only logged: the topic may exist under rules we cannot see (ACLs
// allow producing but not creating), and producing reports the real error.
func (d *deadLetters) ensureTopic(topic string) {
	if d.created[topic] {
		return
	}
	admin, err := sarama.NewClusterAdminFromClient(d.client)
	if err != nil {
		d.log.Warn("dead-letter topic: kafka admin", "topic", topic, "err", err)
		return
	}
	// Not admin.Close: that would close the shared client.
	replication := int16(-1)
	if !d.client.Config().Version.IsAtLeast(sarama.V2_4_0_0) {
		replication = 1 // "broker default" needs CreateTopics v4
	}
	err = admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: replication}, false)
	if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		d.log.Warn("create dead-letter topic", "topic", topic, "err", err)
		return
	}
	d.created[topic] = true
}

func (d *deadLetters) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closeLocked()
}

func (d *deadLetters) closeLocked() error {
	if d.producer == nil {
		return nil
	}
	err := errors.Join(d.producer.Close(), d.client.Close())
	d.producer, d.client = nil, nil
	return err
}

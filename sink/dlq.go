package sink

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

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
	kafka    config.Kafka
	suffix   string
	sink     string
	maxBytes int // the producer's Producer.MaxMessageBytes
	log      *slog.Logger

	// dedupe skips messages that already have a dead letter from this
	// sink (replay; see dropKnown).
	dedupe bool

	mu       sync.Mutex
	client   sarama.Client
	producer sarama.SyncProducer
	created  map[string]bool            // dead-letter topics known to exist
	known    map[string]map[string]bool // by dead-letter topic: origins with a dead letter (dedupe)
}

// defaultDLQMaxBytes applies when the configuration sets no limit (one
// built in code): Kafka's default message.max.bytes less the batch
// overhead, so that a message of capture's default 1,000,000 bytes plus the
// reason headers fits.
const defaultDLQMaxBytes = 1 << 20

func newDeadLetters(k config.Kafka, suffix, sink string, maxBytes int, log *slog.Logger) *deadLetters {
	if maxBytes <= 0 {
		maxBytes = defaultDLQMaxBytes
	}
	return &deadLetters{kafka: k, suffix: suffix, sink: sink, maxBytes: maxBytes, log: log,
		created: map[string]bool{}, known: map[string]map[string]bool{}}
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
	if d.dedupe {
		var err error
		if msgs, err = d.dropKnown(msgs); err != nil {
			return err
		}
		if len(msgs) == 0 {
			return nil
		}
	}
	out := make([]*sarama.ProducerMessage, 0, len(msgs))
	for _, m := range msgs {
		topic := m.Raw.Topic + d.suffix
		d.ensureTopic(topic)
		out = append(out, d.record(topic, m))
	}
	err := d.producer.SendMessages(out)
	if tooLarge := refusedAsTooLarge(err); len(tooLarge) > 0 {
		// The broker's limit for the topic is below ours: send those
		// without their payload, which is what a dead letter can do
		// without. The rest of the batch was written or failed on its
		// own; resending it is harmless (a duplicate dead letter).
		for _, pm := range tooLarge {
			omitPayload(pm, "refused by the broker as too large")
		}
		err = d.producer.SendMessages(tooLarge)
	}
	if err != nil {
		// A failed producer may hold broken connections; start afresh.
		d.closeLocked()
		return fmt.Errorf("write dead letters: %w", err)
	}
	if d.dedupe {
		d.remember(msgs)
	}
	return nil
}

// refusedAsTooLarge returns the messages of a SendMessages error that the
// broker refused as too large, when those are its only failures.
func refusedAsTooLarge(err error) []*sarama.ProducerMessage {
	var perrs sarama.ProducerErrors
	if !errors.As(err, &perrs) {
		return nil
	}
	out := make([]*sarama.ProducerMessage, 0, len(perrs))
	for _, pe := range perrs {
		if !errors.Is(pe.Err, sarama.ErrMessageSizeTooLarge) {
			return nil
		}
		out = append(out, pe.Msg)
	}
	return out
}

// omitPayload drops a dead letter's value, key and copied headers (what
// the reason and origin headers do not need), saying so in a header: the
// origin headers still locate the message on its topic.
func omitPayload(pm *sarama.ProducerMessage, why string) {
	var omitted []string
	if pm.Value != nil {
		omitted = append(omitted, fmt.Sprintf("value (%d bytes)", pm.Value.Length()))
		pm.Value = nil
	}
	if pm.Key != nil {
		omitted = append(omitted, fmt.Sprintf("key (%d bytes)", pm.Key.Length()))
		pm.Key = nil
	}
	kept := pm.Headers[:0]
	dropped := 0
	for _, h := range pm.Headers {
		if strings.HasPrefix(string(h.Key), dlqHeaderPrefix) {
			kept = append(kept, h)
		} else {
			dropped++
		}
	}
	if dropped > 0 {
		omitted = append(omitted, fmt.Sprintf("%d original headers", dropped))
	}
	pm.Headers = append(kept, sarama.RecordHeader{
		Key:   []byte(pipeline.HeaderDLQOmitted),
		Value: []byte(strings.Join(omitted, ", ") + ": " + why),
	})
}

// dlqHeaderPrefix starts the headers a dead letter adds.
const dlqHeaderPrefix = "cdcsync.dlq."

func (d *deadLetters) record(topic string, m *Message) *sarama.ProducerMessage {
	reason := cutUTF8(m.Err.Error(), maxDLQErrorLen)
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
	if pm.ByteSize(2) > d.maxBytes {
		omitPayload(pm, "larger than CDCSYNC_DLQ_MAX_MESSAGE_BYTES")
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
	sc.Producer.MaxMessageBytes = d.maxBytes
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

// cutUTF8 returns at most n bytes of s, cut before a character rather
// than inside one, so that the header stays valid UTF-8 (errors quote
// input, which may be any text).
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

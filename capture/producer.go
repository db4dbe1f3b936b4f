package capture

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	gometrics "github.com/rcrowley/go-metrics"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/kafkaclient"
	"github.com/cdcsync/cdcsync/pipeline"
)

// producer sends Records to Kafka with an idempotent, acks=all async
// producer and reports each acknowledgement to the tracker. A message that
// fails after sarama's retries poisons the session: its position must never
// be confirmed, so the stream is restarted from the confirmed LSN.
type producer struct {
	ap       sarama.AsyncProducer
	admin    sarama.ClusterAdmin
	client   sarama.Client      // partition metadata for watermarks
	registry gometrics.Registry // sarama's metrics: requests on the wire
	// answerWait bounds the wait for a request's answer: sarama gives
	// up on it after Net.ReadTimeout.
	answerWait time.Duration
	tracker    *pipeline.Tracker
	metrics    *metrics
	topicCfg   sarama.TopicDetail
	dlqCfg     sarama.TopicDetail // dead-letter topics: never compacted
	// maxMessageBytes is the producer's limit: a larger message is a
	// poison record, refused before it enters the producer.
	maxMessageBytes int
	// cleanupPolicy is the cleanup.policy of table topics.
	cleanupPolicy string
	// txn is the transaction state under exactly-once delivery (nil: at
	// least once); set before the acknowledgement loop starts.
	txn *txn

	// waitTick paces keepAlive while send waits for the producer's input
	// (stream goroutine only; stopped by close).
	waitTick *time.Ticker

	mu     sync.Mutex
	topics map[string]*topicState // topics known to exist
	failed chan error             // first delivery failure; buffered, size 1
	done   chan struct{}          // closed when the acknowledgement loop ends
}

// messageMeta travels with a message through the producer.
type messageMeta struct {
	seq  uint64 // tracker sequence number
	sent time.Time
}

// topicState holds a topic's counters, looked up once per topic rather than
// by label on every message.
type topicState struct {
	produced, acknowledged prometheus.Counter
}

// producerConfig builds sarama's configuration for capture.
func producerConfig(cfg config.Capture) (*sarama.Config, error) {
	sc, err := kafkaclient.Config(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1 // required by the idempotent producer; keeps per-partition order
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	// Retry transient failures (broker down, leader moving) for about ten
	// minutes: sarama retries a partition's messages in order, while a
	// message that fails for good lets later ones of its partition through
	// first, which breaks per-key order until the stream re-sends (found
	// by the soak when the broker was killed). A broker that stays away
	// fills the in-flight window; the stream stops reading and readiness
	// reports the stall. (sarama keeps per-partition state per retry
	// level, so the count cannot be unbounded.)
	sc.Producer.Retry.Max = 300
	sc.Producer.Retry.BackoffFunc = retryBackoff
	// A partition whose leader cannot be looked up fails its message at
	// once after the metadata retries, so they must outlast a broker
	// restart too (about 20 s here); the partition's later messages wait
	// behind it, in order.
	sc.Metadata.Retry.Max = 24
	sc.Metadata.Retry.BackoffFunc = func(retries, maxRetries int) time.Duration {
		return min(retryBackoff(retries, maxRetries), time.Second)
	}
	sc.Producer.Partitioner = newPartitioner // per-key order: same key, same partition (watermarks: the partition they name)
	sc.Producer.Flush.Messages = cfg.BatchMessages
	sc.Producer.Flush.Frequency = cfg.Linger
	sc.Producer.Flush.MaxMessages = 0
	sc.Producer.MaxMessageBytes = cfg.MaxMessageBytes
	sc.ChannelBufferSize = 1024
	sc.Metadata.AllowAutoTopicCreation = false
	codec, err := compressionCodec(cfg.Compression)
	if err != nil {
		return nil, err
	}
	sc.Producer.Compression = codec
	if cfg.Delivery == deliveryExactlyOnce {
		exactlyOnce(sc, cfg)
	}
	return sc, nil
}

// retryBackoff doubles from 100ms up to 2s between produce retries.
func retryBackoff(retries, _ int) time.Duration {
	d := 100 * time.Millisecond
	for i := 0; i < retries && d < 2*time.Second; i++ {
		d *= 2
	}
	return min(d, 2*time.Second)
}

func compressionCodec(name string) (sarama.CompressionCodec, error) {
	switch name {
	case "", "none":
		return sarama.CompressionNone, nil
	case "gzip":
		return sarama.CompressionGZIP, nil
	case "snappy":
		return sarama.CompressionSnappy, nil
	case "lz4":
		return sarama.CompressionLZ4, nil
	case "zstd":
		return sarama.CompressionZSTD, nil
	}
	return 0, fmt.Errorf("CDCSYNC_KAFKA_COMPRESSION: unknown codec %q", name)
}

// startProducer is newProducer bounded by ctx: connecting retries metadata
// for a while when no broker answers, and a shutdown must not wait for it.
func startProducer(ctx context.Context, cfg config.Capture, tracker *pipeline.Tracker, m *metrics) (*producer, error) {
	type result struct {
		p   *producer
		err error
	}
	done := make(chan result, 1)
	go func() {
		p, err := newProducer(cfg, tracker, m)
		done <- result{p, err}
	}()
	select {
	case r := <-done:
		return r.p, r.err
	case <-ctx.Done():
		go func() { // close it when it arrives
			if r := <-done; r.p != nil {
				r.p.ap.AsyncClose()
				_ = r.p.admin.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// newProducer connects to the brokers. Call run to start the acknowledgement
// loop and close to flush and stop.
func newProducer(cfg config.Capture, tracker *pipeline.Tracker, m *metrics) (*producer, error) {
	sc, err := producerConfig(cfg)
	if err != nil {
		return nil, err
	}
	client, err := sarama.NewClient(cfg.Kafka.Brokers, sc)
	if err != nil {
		return nil, fmt.Errorf("connect to kafka: %w", err)
	}
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("kafka admin: %w", err)
	}
	sp, err := sarama.NewAsyncProducerFromClient(client)
	if err != nil {
		admin.Close()
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	var ap sarama.AsyncProducer = sp
	if sc.Producer.Transaction.ID != "" {
		ap = newTxnGuard(sp) // never closed under a running commit
	}
	// The broker measures a record batch (header included) against the
	// topic's max.message.bytes, the producer a record: with the margin a
	// message the producer accepts is never refused by the broker.
	maxBytes := strconv.Itoa(cfg.MaxMessageBytes + batchOverhead)
	topicCfg := sarama.TopicDetail{NumPartitions: cfg.TopicPartitions, ReplicationFactor: cfg.TopicReplication,
		ConfigEntries: map[string]*string{"max.message.bytes": &maxBytes}}
	dlqCfg := topicCfg
	deletePolicy := "delete"
	dlqCfg.ConfigEntries = map[string]*string{"max.message.bytes": &maxBytes, "cleanup.policy": &deletePolicy}
	return &producer{
		ap: ap, admin: admin, client: client, registry: sc.MetricRegistry, answerWait: sc.Net.ReadTimeout + time.Second, tracker: tracker, metrics: m,
		topicCfg: topicCfg, dlqCfg: dlqCfg, maxMessageBytes: cfg.MaxMessageBytes,
		cleanupPolicy: cmp.Or(cfg.TopicCleanupPolicy, "compact"),
		topics:        map[string]*topicState{},
		failed:        make(chan error, 1),
		done:          make(chan struct{}),
	}, nil
}

// ensureTopic creates topic if it does not exist yet.
func (p *producer) ensureTopic(topic string) error {
	_, err := p.topic(topic)
	return err
}

// ensureTableTopic creates a table's topic if it does not exist yet, with
// the table topics' cleanup.policy (compact by default: the latest event per
// key and the tombstones are what a rebuild needs, see README "Topics and
// retention"). Other topics (outbox events, transaction metadata) are
// event streams and keep the broker's default.
func (p *producer) ensureTableTopic(topic string) error {
	detail := p.topicCfg
	policy := p.cleanupPolicy
	detail.ConfigEntries = maps.Clone(detail.ConfigEntries)
	if detail.ConfigEntries == nil {
		detail.ConfigEntries = map[string]*string{}
	}
	detail.ConfigEntries["cleanup.policy"] = &policy
	_, err := p.create(topic, detail)
	return err
}

// topicLimit returns the max.message.bytes of an existing topic (0 when
// the broker does not say). Topics capture creates get the producer's
// limit; one that existed before may have less, and Kafka then refuses
// whole batches (see PoisonError.Broker).
func (p *producer) topicLimit(topic string) (int, error) {
	entries, err := p.admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic, ConfigNames: []string{"max.message.bytes"}})
	if err != nil {
		return 0, fmt.Errorf("describe topic %s: %w", topic, err)
	}
	for _, e := range entries {
		if e.Name == "max.message.bytes" {
			n, err := strconv.Atoi(e.Value)
			if err != nil {
				return 0, fmt.Errorf("topic %s: max.message.bytes %q: %w", topic, e.Value, err)
			}
			return n, nil
		}
	}
	return 0, nil
}

// topic returns the state of topic, creating the topic on first use.
func (p *producer) topic(topic string) (*topicState, error) {
	// The usual case first: create's detail escapes to the heap, which
	// would cost an allocation per message.
	p.mu.Lock()
	st := p.topics[topic]
	p.mu.Unlock()
	if st != nil {
		return st, nil
	}
	detail := p.topicCfg
	if strings.HasSuffix(topic, deadLetterSuffix) {
		detail = p.dlqCfg
	}
	return p.create(topic, detail)
}

// create returns the state of topic, creating it with detail on first use.
func (p *producer) create(topic string, detail sarama.TopicDetail) (*topicState, error) {
	p.mu.Lock()
	st := p.topics[topic]
	p.mu.Unlock()
	if st != nil {
		return st, nil
	}
	err := p.admin.CreateTopic(topic, &detail, false)
	if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		return nil, fmt.Errorf("create topic %s: %w", topic, err)
	}
	st = &topicState{
		produced:     p.metrics.produced.WithLabelValues(topic),
		acknowledged: p.metrics.acknowledged.WithLabelValues(topic),
	}
	p.mu.Lock()
	p.topics[topic] = st
	p.mu.Unlock()
	return st, nil
}

// ackLoop reads acknowledgements and failures until the producer closes.
func (p *producer) ackLoop() {
	defer close(p.done)
	successes, errs := p.ap.Successes(), p.ap.Errors()
	for successes != nil || errs != nil {
		select {
		case msg, ok := <-successes:
			if !ok {
				successes = nil
				continue
			}
			meta, ok := msg.Metadata.(*messageMeta)
			if !ok {
				continue // a watermark: nothing tracked
			}
			p.tracker.Ack(meta.seq)
			p.metrics.produceTime.Observe(time.Since(meta.sent).Seconds())
			p.mu.Lock()
			st := p.topics[msg.Topic]
			p.mu.Unlock()
			if st != nil {
				st.acknowledged.Inc()
			}
		case perr, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			p.metrics.produceErrors.Inc()
			if _, ok := perr.Msg.Metadata.(*watermarkMeta); ok {
				// A lost watermark loses nothing: it covers only
				// acknowledged changes, and the next one follows.
				continue
			}
			err := fmt.Errorf("produce to %s: %w", perr.Msg.Topic, perr.Err)
			if p.txn != nil {
				err = fenced(err)
			}
			if errors.Is(perr.Err, sarama.ErrMessageSizeTooLarge) {
				// The broker refused a batch the producer deemed small
				// enough: the topic's limit is lower than ours. Every
				// message of the batch failed, the innocent ones too, so
				// none is dead-lettered: capture stops and says why.
				pe := &PoisonError{Topic: perr.Msg.Topic, Limit: p.maxMessageBytes, Broker: true, Size: perr.Msg.ByteSize(2)}
				pe.Position, _ = pipeline.ParsePosition(headerValue(perr.Msg.Headers, headerPosition))
				err = pe
			}
			select {
			case p.failed <- err:
			default:
			}
		}
	}
}

// send produces rec. The caller has checked that the tracker is not full.
//
// The producer's buffers can fill before the tracker does (a broker that
// stalls takes nothing): while send waits for the producer to take the
// message it calls keepAlive every interval, so the caller keeps answering
// Postgres and reports the stall instead of going silent.
func (p *producer) send(ctx context.Context, rec Record, keepAlive func(context.Context) error, interval time.Duration) error {
	st, err := p.topic(rec.Topic)
	if err != nil {
		return err
	}
	msg := &sarama.ProducerMessage{Topic: rec.Topic, Headers: rec.Headers}
	if rec.Key != nil {
		msg.Key = sarama.ByteEncoder(rec.Key)
	}
	if rec.Value != nil {
		msg.Value = sarama.ByteEncoder(rec.Value)
	}
	if size := msg.ByteSize(2); size > p.maxMessageBytes {
		// sarama would fail it asynchronously, after later messages
		// were sent; refuse it here, where the stream can deal with it.
		return &PoisonError{Topic: rec.Topic, Position: rec.Position, Op: pipeline.Op(headerValue(rec.Headers, headerOp)), Size: size, Limit: p.maxMessageBytes}
	}
	if p.txn != nil {
		if err := p.txn.begin(); err != nil {
			return err
		}
	}
	msg.Metadata = &messageMeta{seq: p.tracker.AddSized(rec.size()), sent: time.Now()}
	st.produced.Inc()
	select {
	case p.ap.Input() <- msg:
		return nil // the usual case: no timer needed
	default:
	}
	// The input is full. This is frequent under load, so the ticker is
	// the producer's, created once: the stream goroutine is send's only
	// caller. A stale tick only makes keepAlive look at the clock.
	if p.waitTick == nil {
		p.waitTick = time.NewTicker(interval)
	}
	tick := p.waitTick
	for {
		select {
		case p.ap.Input() <- msg:
			return nil
		case err := <-p.failed:
			p.failed <- err
			return err
		case <-tick.C:
			if err := keepAlive(ctx); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// batchOverhead is what a record batch adds to its records (61 bytes of
// header), with room to spare.
const batchOverhead = 1024

// headerValue returns the value of header key, or "".
func headerValue(headers []sarama.RecordHeader, key []byte) string {
	for _, h := range headers {
		if bytes.Equal(h.Key, key) {
			return string(h.Value)
		}
	}
	return ""
}

// err returns the first delivery failure, if any, without consuming it.
func (p *producer) err() error {
	if p.txn != nil {
		if err := p.txn.fatal(); err != nil {
			return errors.Join(err, p.deliveryErr())
		}
	}
	return p.deliveryErr()
}

// deliveryErr returns the first message that failed for good, if any,
// without consuming it.
func (p *producer) deliveryErr() error {
	select {
	case err := <-p.failed:
		p.failed <- err
		return err
	default:
		return nil
	}
}

// close flushes what is in flight for up to drain, then abandons the rest,
// and returns only once this producer can write nothing more.
//
// The messages it abandons are re-sent by the next session (or a standby)
// from the confirmed LSN; if this producer could still deliver its copy
// afterwards (sarama retries in the background, a broker applies a request
// it held), the stale copy would land after newer changes of the same key.
// So: a request already sent is waited for (up to answer) because the
// broker may still apply it, and then closing the client makes sarama's
// retries fail at once.
//
// drain and answer share one deadline (CDCSYNC_SHUTDOWN_TIMEOUT's share):
// a flush that ends early leaves its time to the wait for answers. Once
// the client is closed sarama stops at once; closeGrace bounds that wait
// when the deadline has passed.
func (p *producer) close(drain, answer time.Duration) error {
	if p.waitTick != nil {
		p.waitTick.Stop()
	}
	drainUntil, deadline := time.Now().Add(drain), time.Now().Add(drain+answer)
	if p.txn != nil {
		p.txn.waitCommit(drain) // closing under a running CommitTxn would panic in sarama
	}
	p.ap.AsyncClose()
	select {
	case <-p.done:
		return errors.Join(p.err(), p.admin.Close())
	case <-time.After(time.Until(drainUntil)):
	}
	errs := []error{errors.New("producer flush timed out; abandoning what was not acknowledged")}
	for p.requestsOnTheWire() > 0 && time.Now().Before(deadline) {
		select {
		case <-p.done:
			return errors.Join(append(errs, p.err(), p.admin.Close())...)
		case <-time.After(20 * time.Millisecond):
		}
	}
	errs = append(errs, p.admin.Close()) // closes the client too
	select {
	case <-p.done:
	case <-time.After(max(time.Until(deadline), closeGrace)):
		errs = append(errs, errors.New("producer did not stop after its client was closed"))
	}
	return errors.Join(append(errs, p.err())...)
}

// closeGrace: how long close waits for sarama to stop after closing its
// client when the shutdown deadline has passed already.
const closeGrace = 500 * time.Millisecond

// requestsOnTheWire counts the produce (and other) requests sent to a
// broker and not answered yet, from sarama's per-broker gauges (a broker's
// series goes when its connection closes, with its requests).
func (p *producer) requestsOnTheWire() int64 {
	var n int64
	p.registry.Each(func(name string, m any) {
		if c, ok := m.(gometrics.Counter); ok && strings.HasPrefix(name, "requests-in-flight-for-broker-") {
			n += c.Count()
		}
	})
	return n
}

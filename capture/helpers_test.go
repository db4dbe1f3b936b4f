package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// testConfig returns a capture configuration with DESIGN.md's defaults,
// pointed at db and the shared broker, with names unique to the test.
func testConfig(e *testenv.Env, db string, tables ...string) config.Capture {
	if len(tables) == 0 {
		tables = []string{"public.orders"}
	}
	return config.Capture{
		SourceURL:         e.PG.URL(db),
		Tables:            tables,
		Slot:              testenv.RandomName("slot"),
		Publication:       testenv.RandomName("pub"),
		SlotBusy:          "wait",
		Snapshot:          "initial",
		SnapshotChunkSize: 1000,
		StateSchema:       "cdcsync",
		TopicPrefix:       testenv.RandomName("cdc"),
		TopicPartitions:   4,
		TopicReplication:  -1,
		HeartbeatInterval: 500 * time.Millisecond,
		StatusInterval:    200 * time.Millisecond,
		MaxInFlight:       5000,
		Compression:       "lz4",
		BatchMessages:     1000,
		Linger:            5 * time.Millisecond,
		MaxMessageBytes:   1000000,
		OnPoison:          "stop",
		MaxInFlightBytes:  64 << 20,
		ShutdownTimeout:   8 * time.Second,
		// The default (config.go); tests of the at-least-once path set
		// "at-least-once" themselves.
		Delivery: "exactly-once",
		Kafka:    config.Kafka{Brokers: e.Kafka.Brokers(), Version: "3.6.0", ClientID: "cdcsync-test"},
	}
}

// captureEnv turns cfg into CDCSYNC_ variables for a capture process.
func captureEnv(cfg config.Capture) []string {
	return []string{
		"CDCSYNC_SOURCE_URL=" + cfg.SourceURL,
		"CDCSYNC_TABLES=" + strings.Join(cfg.Tables, ","),
		"CDCSYNC_SLOT=" + cfg.Slot,
		"CDCSYNC_PUBLICATION=" + cfg.Publication,
		"CDCSYNC_SNAPSHOT=" + cfg.Snapshot,
		"CDCSYNC_TOPIC_PREFIX=" + cfg.TopicPrefix,
		"CDCSYNC_KAFKA_BROKERS=" + strings.Join(cfg.Kafka.Brokers, ","),
		"CDCSYNC_HEARTBEAT_INTERVAL=" + cfg.HeartbeatInterval.String(),
		"CDCSYNC_STATUS_INTERVAL=" + cfg.StatusInterval.String(),
		"CDCSYNC_MAX_IN_FLIGHT=" + fmt.Sprint(cfg.MaxInFlight),
		"CDCSYNC_HTTP_ADDR=",
		"CDCSYNC_LOG_LEVEL=info",
		"CDCSYNC_KAFKA_COMPRESSION=" + cfg.Compression,
		"CDCSYNC_KAFKA_MAX_MESSAGE_BYTES=" + fmt.Sprint(cfg.MaxMessageBytes),
		"CDCSYNC_DELIVERY=" + cfg.Delivery,
	}
}

// startCapture runs capture.Run in-process until the test ends (or the
// returned stop is called, which reports Run's error).
func startCapture(t *testing.T, cfg config.Capture) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	go func() { done <- Run(ctx, cfg, logger, nil) }()
	stopped := false
	var result error
	stop = func() error {
		if stopped {
			return result
		}
		stopped = true
		cancel()
		select {
		case result = <-done:
		case <-time.After(20 * time.Second):
			result = fmt.Errorf("capture did not stop within 20s")
		}
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// message is one record read back from a topic.
type message struct {
	Partition int32
	Offset    int64
	Key       map[string]any
	Event     *pipeline.Event // nil for a tombstone or a control record
	Headers   map[string]string
}

// readTopic reads every record of topic a read_committed consumer sees
// now, except watermarks, partition by partition.
func readTopic(t *testing.T, brokers []string, topic string) []message {
	t.Helper()
	var out []message
	consumeTopic(t, brokers, topic, func(m *sarama.ConsumerMessage) { out = append(out, decodeMessage(t, m)) })
	return out
}

// consumeTopic hands every record of topic a read_committed consumer sees
// now (testenv.ConsumeTopic), except watermarks, to fn, partition by
// partition, in offset order.
func consumeTopic(t *testing.T, brokers []string, topic string, fn func(*sarama.ConsumerMessage)) {
	t.Helper()
	testenv.ConsumeTopic(t, brokers, topic, func(m *sarama.ConsumerMessage) {
		// Watermarks are the sinks' business (watermark_test.go reads
		// them); the tests here read the changes.
		if !pipeline.IsWatermark(m.Headers) {
			fn(m)
		}
	})
}

func decodeMessage(t *testing.T, m *sarama.ConsumerMessage) message {
	t.Helper()
	msg := message{Partition: m.Partition, Offset: m.Offset, Headers: map[string]string{}}
	for _, h := range m.Headers {
		msg.Headers[string(h.Key)] = string(h.Value)
	}
	if m.Key != nil {
		dec := json.NewDecoder(bytes.NewReader(m.Key))
		dec.UseNumber() // ids must not turn into floats
		if err := dec.Decode(&msg.Key); err != nil {
			t.Fatalf("key %q: %v", m.Key, err)
		}
	}
	if m.Value != nil && !pipeline.IsControl(m.Headers) {
		ev, err := pipeline.DecodeEvent(m.Value)
		if err != nil {
			t.Fatalf("value %s: %v", m.Value, err)
		}
		msg.Event = ev
	}
	return msg
}

// waitFor polls cond until it is true or the timeout expires.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// topicCount returns the number of records of topic a read_committed
// consumer sees now (watermarks included, transaction markers and aborted
// records not).
func topicCount(t *testing.T, brokers []string, topic string) int64 {
	t.Helper()
	return testenv.CommittedCount(t, brokers, topic)
}

// topicOffsets returns the sum of the high watermarks of topic's
// partitions: every record written, committed or not, plus one offset per
// transaction marker.
func topicOffsets(t *testing.T, brokers []string, topic string) int64 {
	t.Helper()
	client, err := sarama.NewClient(brokers, testenv.SaramaConfig())
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	defer client.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		return 0
	}
	var n int64
	for _, p := range parts {
		off, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		n += off
	}
	return n
}

// connect opens a connection to db for the test.
func connect(t *testing.T, e *testenv.Env, db string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), e.PG.URL(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

const ordersDDL = `CREATE TABLE orders (
	id bigint PRIMARY KEY,
	item_id bigint NOT NULL,
	quantity bigint NOT NULL,
	status text NOT NULL,
	note text)`

// buildBinary builds cmd/cdcsync once per test binary run into dir.
func buildBinary(t *testing.T) string {
	t.Helper()
	return testenv.BuildCdcsync(t)
}

func waitSlotActive(t *testing.T, conn *pgx.Conn, slot string) {
	t.Helper()
	waitFor(t, 30*time.Second, "capture to stream from slot "+slot, func() bool {
		var active bool
		_ = conn.QueryRow(t.Context(), `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active)
		return active
	})
}

// waitSlotInactive waits until no session streams from slot: a walsender
// outlives the replication connection that ended it by a moment, and the
// slot cannot be dropped or streamed from again meanwhile.
func waitSlotInactive(t *testing.T, conn *pgx.Conn, slot string) {
	t.Helper()
	waitFor(t, 30*time.Second, "the slot "+slot+" to be released", func() bool {
		var active bool
		_ = conn.QueryRow(t.Context(), `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active)
		return !active
	})
}

// slowBroker delays every produce request by delay until the test ends or
// the returned restore is called, so that capture runs under
// backpressure. The delay holds the whole kfake cluster, like a broker
// whose disk stalls.
func slowBroker(t *testing.T, cluster *kfake.Cluster, delay time.Duration) (restore func()) {
	t.Helper()
	var slow atomic.Bool
	slow.Store(true)
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if !slow.Load() {
			cluster.DropControl()
			return nil, nil, false
		}
		time.Sleep(delay)
		return nil, nil, false
	})
	restore = func() { slow.Store(false) }
	t.Cleanup(restore)
	return restore
}

// ownBroker returns e with a broker of the test's own, for tests that break
// or hold the broker (the shared one serves the other tests).
func ownBroker(t *testing.T, e *testenv.Env) *testenv.Env {
	t.Helper()
	kafka, err := testenv.StartKafka()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	return &testenv.Env{PG: e.PG, Redis: e.Redis, Kafka: kafka}
}

// waitAllConfirmed waits until capture confirmed everything written so far,
// so that every committed change is on Kafka.
func waitAllConfirmed(t *testing.T, conn *pgx.Conn, slot string) {
	t.Helper()
	var walEnd pglogrepl.LSN
	if err := conn.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&walEnd); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "capture to confirm all writes", func() bool {
		var lsn pglogrepl.LSN
		_ = conn.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&lsn)
		return lsn >= walEnd
	})
}

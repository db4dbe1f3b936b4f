package capture

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// observed is capture run in-process with its readiness, metrics and logs
// kept for assertions.
type observed struct {
	conn  *pgx.Conn
	cfg   config.Capture
	topic string // of public.orders
	ready *readinessLog
	reg   *prometheus.Registry
	logs  *logRecords
}

// startObserved creates an orders table in a new database and streams it
// (no snapshot) with cfg adjusted by tweak, until the slot is active.
func startObserved(t *testing.T, tweak func(*config.Capture)) *observed {
	t.Helper()
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	o := &observed{conn: connect(t, e, db), ready: &readinessLog{}, reg: prometheus.NewRegistry(), logs: &logRecords{}}
	mustExec(t, o.conn, ordersDDL)
	o.cfg = testConfig(e, db)
	o.cfg.Snapshot = "never"
	tweak(&o.cfg)
	o.topic = pipeline.Topic(o.cfg.TopicPrefix, "public", "orders")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o.cfg, slog.New(o.logs), o.reg, WithReadiness(o.ready)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("capture: %v", err)
		}
	})
	waitSlotActive(t, o.conn, o.cfg.Slot)
	return o
}

// bigNote is a row value larger than the producer's 1,000,000-byte limit.
const bigNoteSQL = "repeat('p', 1500000)"

// TestPoisonRowStopsLoudly: by default a row too large for Kafka stops
// capture at that row, says so (not ready, a metric, one error log naming
// the table, key columns, size, limit and the fix, without row values) and
// does not spin through session restarts (issue 10 item 11).
func TestPoisonRowStopsLoudly(t *testing.T) {
	r := startObserved(t, func(*config.Capture) {})
	conn, topic := r.conn, r.topic
	mustExec(t, conn,
		"INSERT INTO orders VALUES (1, 1, 1, 'created', 'fine')",
		"INSERT INTO orders VALUES (2, 1, 1, 'created', "+bigNoteSQL+")",
		"INSERT INTO orders VALUES (3, 1, 1, 'created', 'after')")

	waitFor(t, 30*time.Second, "not ready because of the poison record", func() bool {
		ok, reason := r.ready.get()
		return !ok && strings.Contains(reason, "poison")
	})
	_, reason := r.ready.get()
	t.Logf("readiness: %s", reason)
	waitFor(t, 10*time.Second, "poison metric", func() bool {
		return counterTotal(t, r.reg, "cdcsync_capture_poison_records_total") >= 1
	})
	if g := gaugeValue(t, r.reg, "cdcsync_capture_stopped_on_poison"); g != 1 {
		t.Errorf("cdcsync_capture_stopped_on_poison = %v, want 1", g)
	}
	var logged string
	r.logs.mu.Lock()
	for _, rec := range r.logs.records {
		if rec.Level == slog.LevelError && strings.Contains(rec.Message, "poison") {
			var b strings.Builder
			b.WriteString(rec.Message)
			rec.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
			logged = b.String()
			break
		}
	}
	r.logs.mu.Unlock()
	t.Logf("logged: %s", logged)
	for _, want := range []string{"public.orders", "id", "1000000", "CDCSYNC_KAFKA_MAX_MESSAGE_BYTES", "CDCSYNC_ON_POISON=dlq"} {
		if !strings.Contains(logged, want) {
			t.Errorf("the error log does not name %q: %s", want, logged)
		}
	}
	if strings.Contains(logged, "pppppppp") {
		t.Error("the error log contains the row's value")
	}
	// Stopped at the row: the one before is on Kafka, the one after is not,
	// and capture holds still instead of restarting every few seconds.
	time.Sleep(3 * time.Second)
	ids := map[string]bool{}
	for _, m := range readTopic(t, env.Kafka.Brokers(), topic) {
		ids[string(m.Key["id"].(json.Number))] = true
	}
	if !ids["1"] || ids["2"] || ids["3"] {
		t.Errorf("ids on the topic: %v, want 1 only", ids)
	}
	if n := counterTotal(t, r.reg, "cdcsync_capture_session_restarts_total"); n > 1 {
		t.Errorf("%v session restarts: capture spins on the poison record", n)
	}
	if n := r.logs.count(slog.LevelError, "poison"); n != 1 {
		t.Errorf("%d error logs about the poison record, want 1", n)
	}
}

// TestPoisonRowToDeadLetterTopic: with CDCSYNC_ON_POISON=dlq the row too
// large goes to <topic>.dlq as a small record naming key, position and
// reason, capture moves on and the slot advances past it.
func TestPoisonRowToDeadLetterTopic(t *testing.T) {
	r := startObserved(t, func(c *config.Capture) { c.OnPoison = "dlq" })
	conn, topic, cfg := r.conn, r.topic, r.cfg
	mustExec(t, conn,
		"INSERT INTO orders VALUES (1, 1, 1, 'created', 'fine')",
		"INSERT INTO orders VALUES (2, 1, 1, 'created', "+bigNoteSQL+")",
		"INSERT INTO orders VALUES (3, 1, 1, 'created', 'after')",
		"UPDATE orders SET note = 'small now' WHERE id = 2")
	var walEnd pglogrepl.LSN
	if err := conn.QueryRow(t.Context(), "SELECT pg_current_wal_lsn()::text").Scan(&walEnd); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the slot to pass the poison record", func() bool {
		var lsn pglogrepl.LSN
		_ = conn.QueryRow(t.Context(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", cfg.Slot).Scan(&lsn)
		return lsn >= walEnd
	})
	var ops []string
	for _, m := range readTopic(t, env.Kafka.Brokers(), topic) {
		ops = append(ops, string(m.Key["id"].(json.Number))+":"+string(m.Event.Op))
	}
	if got := strings.Join(ops, " "); !strings.Contains(got, "1:c") || !strings.Contains(got, "3:c") || !strings.Contains(got, "2:u") || strings.Contains(got, "2:c") {
		t.Errorf("records on the topic: %s; want 1:c, 3:c and 2:u, and not the poison 2:c", got)
	}
	var dead []*sarama.ConsumerMessage
	consumeTopic(t, env.Kafka.Brokers(), topic+".dlq", func(m *sarama.ConsumerMessage) { dead = append(dead, m) })
	if len(dead) != 1 {
		t.Fatalf("%d records on %s.dlq, want 1", len(dead), topic)
	}
	d := dead[0]
	headers := map[string]string{}
	for _, h := range d.Headers {
		headers[string(h.Key)] = string(h.Value)
	}
	t.Logf("dead letter: key %s value %s headers %v", d.Key, d.Value, headers)
	if string(d.Key) != `{"id":2}` {
		t.Errorf("dead letter key %s, want the row's key", d.Key)
	}
	if len(d.Value) > 4096 {
		t.Errorf("dead letter value of %d bytes: it carries the payload", len(d.Value))
	}
	if _, err := pipeline.ParsePosition(headers[pipeline.HeaderPosition]); err != nil {
		t.Errorf("dead letter position header %q: %v", headers[pipeline.HeaderPosition], err)
	}
	if reason := headers[pipeline.HeaderDLQError]; !strings.Contains(reason, "1000000") || !strings.Contains(reason, "public.orders") {
		t.Errorf("dead letter reason %q does not name the table and the limit", reason)
	}
	if headers[pipeline.HeaderDLQTopic] != topic {
		t.Errorf("dead letter topic header %q, want %s", headers[pipeline.HeaderDLQTopic], topic)
	}
	if ok, reason := r.ready.get(); !ok {
		t.Errorf("not ready after dead-lettering: %s", reason)
	}
	if n := counterTotal(t, r.reg, "cdcsync_capture_poison_records_total"); n != 1 {
		t.Errorf("poison records counted: %v, want 1", n)
	}
}

// TestTopicsAcceptWhatTheProducerSends: topics are created with
// max.message.bytes matching CDCSYNC_KAFKA_MAX_MESSAGE_BYTES, so a row the
// producer accepts is not refused by the broker (whose default is ~1 MB).
func TestTopicsAcceptWhatTheProducerSends(t *testing.T) {
	r := startObserved(t, func(c *config.Capture) {
		c.Compression = "none" // the broker measures the batch as sent
		c.MaxMessageBytes = 2000000
	})
	conn, topic, cfg := r.conn, r.topic, r.cfg

	admin, err := sarama.NewClusterAdmin(env.Kafka.Brokers(), testenv.SaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic, ConfigNames: []string{"max.message.bytes"}})
	if err != nil {
		t.Fatal(err)
	}
	var limit int
	for _, c := range entries {
		if c.Name == "max.message.bytes" {
			limit, _ = strconv.Atoi(c.Value)
		}
	}
	if limit < cfg.MaxMessageBytes {
		t.Errorf("topic max.message.bytes = %d, below the producer's %d", limit, cfg.MaxMessageBytes)
	}
	mustExec(t, conn, "INSERT INTO orders VALUES (1, 1, 1, 'created', "+bigNoteSQL+")")
	waitFor(t, 30*time.Second, "the 1.5 MB row on kafka", func() bool { return topicCount(t, env.Kafka.Brokers(), topic) >= 1 })
}

// weirdTypeDDL makes a column type the catalog describes as an array of
// int4 (a variable-length type with an element type) whose text output is
// plain text: the decoder rejects its values.
var weirdTypeDDL = []string{
	`CREATE TYPE weird`,
	`CREATE FUNCTION weird_in(cstring) RETURNS weird AS 'textin' LANGUAGE internal IMMUTABLE STRICT`,
	`CREATE FUNCTION weird_out(weird) RETURNS cstring AS 'textout' LANGUAGE internal IMMUTABLE STRICT`,
	`CREATE TYPE weird (INPUT = weird_in, OUTPUT = weird_out, ELEMENT = int4, INTERNALLENGTH = VARIABLE, SUBSCRIPT = raw_array_subscript_handler)`,
	`ALTER TABLE orders ADD COLUMN w weird`,
}

// TestUndecodableValueIsPoison: a value the decoder rejects is a poison
// record too: stopped at loudly by default, dead-lettered with dlq.
func TestUndecodableValueIsPoison(t *testing.T) {
	t.Run("stop", func(t *testing.T) {
		r := startObserved(t, func(*config.Capture) {})
		mustExec(t, r.conn, weirdTypeDDL...)
		mustExec(t, r.conn, "INSERT INTO orders VALUES (1, 1, 1, 'created', NULL, 'secret value')")
		waitFor(t, 30*time.Second, "not ready because of the poison record", func() bool {
			ok, reason := r.ready.get()
			return !ok && strings.Contains(reason, "poison") && strings.Contains(reason, "public.orders")
		})
		_, reason := r.ready.get()
		t.Logf("readiness: %s", reason)
		if strings.Contains(reason, "secret") {
			t.Error("readiness shows the row's value")
		}
		if n := r.logs.count(slog.LevelError, "poison"); n != 1 {
			t.Errorf("%d error logs about the poison record, want 1", n)
		}
	})
	t.Run("dlq", func(t *testing.T) {
		r := startObserved(t, func(c *config.Capture) { c.OnPoison = "dlq" })
		mustExec(t, r.conn, weirdTypeDDL...)
		mustExec(t, r.conn,
			"INSERT INTO orders VALUES (1, 1, 1, 'created', NULL, NULL)",
			"INSERT INTO orders VALUES (2, 1, 1, 'created', NULL, 'secret value')",
			"INSERT INTO orders VALUES (3, 1, 1, 'created', NULL, NULL)")
		var walEnd pglogrepl.LSN
		if err := r.conn.QueryRow(t.Context(), "SELECT pg_current_wal_lsn()::text").Scan(&walEnd); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "the slot to pass the poison record", func() bool {
			var lsn pglogrepl.LSN
			_ = r.conn.QueryRow(t.Context(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", r.cfg.Slot).Scan(&lsn)
			return lsn >= walEnd
		})
		var ids []string
		for _, m := range readTopic(t, env.Kafka.Brokers(), r.topic) {
			ids = append(ids, string(m.Key["id"].(json.Number)))
		}
		if got := strings.Join(ids, ","); got != "1,3" && got != "3,1" {
			t.Errorf("ids on the topic: %s, want 1 and 3", got)
		}
		var dead []*sarama.ConsumerMessage
		consumeTopic(t, env.Kafka.Brokers(), r.topic+".dlq", func(m *sarama.ConsumerMessage) { dead = append(dead, m) })
		if len(dead) != 1 {
			t.Fatalf("%d dead letters, want 1", len(dead))
		}
		t.Logf("dead letter: %s", dead[0].Value)
		if strings.Contains(string(dead[0].Value), "secret") || !strings.Contains(string(dead[0].Value), `"w\"`) {
			t.Errorf("dead letter %s: want the column named and the value left out", dead[0].Value)
		}
	})
}

// TestExistingTopicWithSmallerLimitIsWarned: a table topic that existed
// before capture (created by hand, or by an older version) with a
// max.message.bytes below CDCSYNC_KAFKA_MAX_MESSAGE_BYTES would make Kafka
// refuse whole batches later; capture says so at start, with the fix.
func TestExistingTopicWithSmallerLimitIsWarned(t *testing.T) {
	prefix := testenv.RandomName("cdc")
	admin, err := sarama.NewClusterAdmin(env.Kafka.Brokers(), testenv.SaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	small := "500000"
	if err := admin.CreateTopic(pipeline.Topic(prefix, "public", "orders"), &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"max.message.bytes": &small}}, false); err != nil {
		t.Fatal(err)
	}
	r := startObserved(t, func(c *config.Capture) { c.TopicPrefix = prefix })
	waitFor(t, 10*time.Second, "a warning about the topic's limit", func() bool {
		return r.logs.count(slog.LevelWarn, "max.message.bytes") == 1
	})
}

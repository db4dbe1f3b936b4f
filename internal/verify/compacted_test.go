package verify

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/pipelinetest"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
	"github.com/cdcsync/cdcsync/sink"
)

// TestRebuildFromCompactedTopicAfterResnapshotEndsExact: the slot is lost
// while orders are deleted, updated and inserted; capture (when_needed)
// reads the table again and writes the resnapshot-done record. Later the
// topic is compacted: kfake does not compact, so the test keeps what a
// compacted topic keeps once delete.retention.ms has passed, the latest
// record of each key in each partition, without tombstones (Kafka's log
// compaction), and copies that into a new topic; then it has kfake compact
// the topic itself (its cleaner runs only when asked, and keeps each
// partition's newest batch whole). A fresh inventory store and Redis
// rebuilt from either alone must equal the order database: the rows
// deleted in the gap must not come back.
func TestRebuildFromCompactedTopicAfterResnapshotEndsExact(t *testing.T) {
	s := newStores(t)
	ctx := context.Background()
	s.exec(s.src, `CREATE TABLE orders (id bigint PRIMARY KEY, item_id bigint, quantity int, status text)`,
		`INSERT INTO orders SELECT g, 1 + g % 7, 1 + g % 3, 'created' FROM generate_series(1, 300) g`)
	p := pipelinetest.NewFor(t, s.e, s.cfg)
	p.Capture.Snapshot = "when_needed"
	s.cfg = p.Verify
	p.Start()
	p.WaitCaughtUp()
	s.exec(s.src, `UPDATE orders SET status = 'paid' WHERE id % 3 = 0`)
	p.WaitCaughtUp()

	// The slot is lost while capture is stopped; meanwhile rows are
	// deleted (only the resnapshot-done record removes them), updated
	// and inserted.
	p.StopCapture()
	conn, err := pgx.Connect(ctx, s.cfg.SourceURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var active bool
		_ = conn.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, p.Capture.Slot).Scan(&active)
		if !active {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slot was not released within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.exec(s.src, `SELECT pg_drop_replication_slot('`+p.Capture.Slot+`')`,
		`DELETE FROM orders WHERE id % 10 = 0`,
		`UPDATE orders SET status = 'shipped' WHERE id % 7 = 0`,
		`INSERT INTO orders SELECT g, 1 + g % 7, 2, 'created' FROM generate_series(1001, 1050) g`)
	p.StartCapture()
	p.WaitCaughtUp()
	if r := s.verify(); r.Drifted != 0 {
		t.Fatalf("the running sinks drifted %d after the re-snapshot", r.Drifted)
	}

	// What Kafka keeps once compacted, copied into a new topic, and a
	// fresh inventory store and Redis rebuilt from it.
	topic := pipeline.Topic(p.Capture.TopicPrefix, "public", "orders")
	prefix := testenv.RandomName("compacted")
	kept, dropped := compactInto(t, s.e, topic, pipeline.Topic(prefix, "public", "orders"))
	t.Logf("compacted %s by Kafka's rule: kept %d records, dropped %d", topic, kept, dropped)
	rebuildFrom(t, s, prefix, "the compacted copy")

	// The same through kfake's own cleaner, on the topic itself, with
	// tombstones expiring at once.
	before := topicRecords(t, s.e, topic)
	compactTopic(t, s.e, topic)
	t.Logf("kfake compacted %s: %d records left of %d", topic, topicRecords(t, s.e, topic), before)
	rebuildFrom(t, s, p.Capture.TopicPrefix, "the topic compacted by kfake")
}

// rebuildFrom runs a sink on the topics of prefix into a fresh inventory
// store and Redis database, waits until it applied them, and checks that
// they equal the order database of s.
func rebuildFrom(t *testing.T, s *stores, prefix, what string) {
	t.Helper()
	fresh := newStores(t)
	var sc config.Sink
	if err := config.Defaults(&sc); err != nil {
		t.Fatal(err)
	}
	sc.InventoryURL, sc.RedisURL, sc.Tables = fresh.cfg.InventoryURL, fresh.cfg.RedisURL, s.cfg.Tables
	sc.TopicPrefix, sc.GroupPrefix = prefix, testenv.RandomName("grp")
	sc.Kafka.Brokers = s.e.Kafka.Brokers()
	sc.HTTP.Addr = ""
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sink.Run(ctx, sc, slog.New(slog.DiscardHandler), prometheus.NewRegistry()) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	rebuilt := s.cfg
	rebuilt.InventoryURL, rebuilt.RedisURL = fresh.cfg.InventoryURL, fresh.cfg.RedisURL
	rebuilt.TopicPrefix, rebuilt.GroupPrefix = sc.TopicPrefix, sc.GroupPrefix
	rebuilt.CutWait = 0 // compaction may have dropped the watermarks
	pipelinetest.WaitCaughtUp(t, rebuilt)
	fresh.cfg = rebuilt
	r := fresh.verify()
	if r.Drifted != 0 {
		for _, c := range r.Checks {
			for _, d := range c.Drifts {
				t.Error(d.Describe(c.Name))
			}
		}
		t.Fatalf("rebuilt from %s: drifted %d", what, r.Drifted)
	}
}

// compactTopic makes topic compacted with tombstones expiring at once
// and runs kfake's cleaner (which keeps each partition's newest batch
// whole).
func compactTopic(t *testing.T, e *testenv.Env, topic string) {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(e.Kafka.Brokers(), testenv.SaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	set := func(v string) sarama.IncrementalAlterConfigsEntry {
		return sarama.IncrementalAlterConfigsEntry{Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &v}
	}
	if err := admin.IncrementalAlterConfig(sarama.TopicResource, topic, map[string]sarama.IncrementalAlterConfigsEntry{
		"cleanup.policy": set("compact"), "delete.retention.ms": set("0"),
	}, false); err != nil {
		t.Fatal(err)
	}
	e.Kafka.Cluster().Compact()
}

// topicRecords is the number of records topic holds now.
func topicRecords(t *testing.T, e *testenv.Env, topic string) int {
	t.Helper()
	n := 0
	testenv.ConsumeTopic(t, e.Kafka.Brokers(), topic, func(*sarama.ConsumerMessage) { n++ })
	return n
}

// compactInto copies what log compaction keeps of topic into to (created
// with the same partitions): per partition, the latest record of each key,
// in offset order, and no record with a null value (compaction removes
// tombstones after delete.retention.ms). It returns the records kept and
// dropped.
func compactInto(t *testing.T, e *testenv.Env, topic, to string) (kept, dropped int) {
	t.Helper()
	byPartition := map[int32][]*sarama.ConsumerMessage{}
	testenv.ConsumeTopic(t, e.Kafka.Brokers(), topic, func(m *sarama.ConsumerMessage) {
		byPartition[m.Partition] = append(byPartition[m.Partition], m)
	})
	if err := e.Kafka.CreateTopic(to, 4); err != nil {
		t.Fatal(err)
	}
	cfg := testenv.SaramaConfig()
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	prod, err := sarama.NewSyncProducer(e.Kafka.Brokers(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for part, msgs := range byPartition {
		last := map[string]int{}
		for i, m := range msgs {
			last[string(m.Key)] = i
		}
		for i, m := range msgs {
			if last[string(m.Key)] != i || m.Value == nil {
				dropped++
				continue
			}
			headers := make([]sarama.RecordHeader, 0, len(m.Headers))
			for _, h := range m.Headers {
				headers = append(headers, *h)
			}
			_, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: to, Partition: part,
				Key: sarama.ByteEncoder(m.Key), Value: sarama.ByteEncoder(m.Value), Headers: headers})
			if err != nil {
				t.Fatal(err)
			}
			kept++
		}
	}
	return kept, dropped
}

package capture

import (
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestTableTopicsAreCompactedAndKeyed: capture creates table topics with
// cleanup.policy=compact by default (delete when configured), and a
// truncate, a control record, carries pipeline.TruncateKey, because a
// compacted topic refuses records without a key.
func TestTableTopicsAreCompactedAndKeyed(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	for _, policy := range []string{"", "delete"} {
		db := e.PG.CreateDB(t)
		conn := connect(t, e, db)
		mustExec(t, conn, ordersDDL, `INSERT INTO orders VALUES (1, 10, 2, 'created', NULL)`)
		cfg := testConfig(e, db)
		cfg.TopicCleanupPolicy = policy
		topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
		stop := startCapture(t, cfg)
		waitFor(t, 30*time.Second, "snapshot row", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 1 })
		mustExec(t, conn, `TRUNCATE orders`)
		waitFor(t, 30*time.Second, "truncate", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 2 })
		if err := stop(); err != nil {
			t.Fatalf("capture stopped with %v", err)
		}

		want := policy
		if want == "" {
			want = "compact"
		}
		if got := topicConfig(t, e.Kafka.Brokers(), topic, "cleanup.policy"); got != want {
			t.Errorf("CDCSYNC_TOPIC_CLEANUP_POLICY=%q: %s has cleanup.policy %q, want %q", policy, topic, got, want)
		}
		truncates := 0
		consumeTopic(t, e.Kafka.Brokers(), topic, func(m *sarama.ConsumerMessage) {
			if op := headerValue(recordHeaders(m), []byte(pipeline.HeaderOp)); op != string(pipeline.OpTruncate) {
				return
			}
			truncates++
			if string(m.Key) != pipeline.TruncateKey {
				t.Errorf("truncate record key %q, want %q", m.Key, pipeline.TruncateKey)
			}
		})
		if truncates != 1 {
			t.Errorf("%d truncate records, want 1", truncates)
		}
	}
}

// topicConfig reads one configuration value of topic from the broker.
func topicConfig(t *testing.T, brokers []string, topic, name string) string {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(brokers, testenv.SaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic, ConfigNames: []string{name}})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// recordHeaders turns a consumed record's headers into a producer's.
func recordHeaders(m *sarama.ConsumerMessage) []sarama.RecordHeader {
	out := make([]sarama.RecordHeader, 0, len(m.Headers))
	for _, h := range m.Headers {
		out = append(out, *h)
	}
	return out
}

package capture

import (
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// Capture writes a watermark to every partition of the table topic, idle
// partitions included, and a partition's watermark at or past a change's
// commit comes after that change.
func TestWatermarksCoverEveryPartition(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, ordersDDL)
	cfg := testConfig(e, db)
	cfg.WatermarkInterval = 10 * time.Millisecond
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	stop := startCapture(t, cfg)
	waitFor(t, 30*time.Second, "capture streaming", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) > 0 })

	mustExec(t, conn, `INSERT INTO orders VALUES (1, 10, 2, 'created', NULL)`)
	var end string
	if err := conn.QueryRow(t.Context(), `SELECT pg_current_wal_lsn()::text`).Scan(&end); err != nil {
		t.Fatal(err)
	}
	target, err := pglogrepl.ParseLSN(end)
	if err != nil {
		t.Fatal(err)
	}
	// Every partition gets a watermark at or past the insert's commit.
	covered := func() bool {
		seen := map[int32]bool{}
		testenv.ConsumeTopic(t, e.Kafka.Brokers(), topic, func(m *sarama.ConsumerMessage) {
			if wm, ok, err := pipeline.ParseWatermark(m.Headers); err == nil && ok && wm.LSN >= target {
				seen[m.Partition] = true
			}
		})
		return len(seen) == int(cfg.TopicPartitions)
	}
	waitFor(t, 30*time.Second, "a watermark past the insert on every partition", covered)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// On the insert's partition, the first watermark covering it comes
	// after it.
	var change *sarama.ConsumerMessage
	firstCover := map[int32]int64{}
	testenv.ConsumeTopic(t, e.Kafka.Brokers(), topic, func(m *sarama.ConsumerMessage) {
		if m.Value != nil {
			change = m
			return
		}
		if wm, ok, _ := pipeline.ParseWatermark(m.Headers); ok && wm.LSN >= target {
			if _, seen := firstCover[m.Partition]; !seen {
				firstCover[m.Partition] = m.Offset
			}
		}
	})
	if change == nil {
		t.Fatal("the insert is not on the topic")
	}
	if off := firstCover[change.Partition]; off <= change.Offset {
		t.Errorf("partition %d: a watermark covering the insert at offset %d, before the insert itself (%d)", change.Partition, off, change.Offset)
	}
}

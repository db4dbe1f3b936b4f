package capture

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/kafkaclient"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// readCommittedTopic reads what a read_committed consumer sees of topic
// now (up to each partition's stable offset), except watermarks.
func readCommittedTopic(t *testing.T, brokers []string, topic string) []message {
	t.Helper()
	client, err := sarama.NewClient(brokers, testenv.SaramaConfig())
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	defer client.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		t.Fatalf("partitions of %s: %v", topic, err)
	}
	var out []message
	for _, p := range parts {
		end, err := kafkaclient.StableOffset(client, topic, p)
		if err != nil {
			t.Fatal(err)
		}
		err = kafkaclient.ReadCommitted(client, topic, p, 0, end, func(off int64, _ *sarama.RecordBatch, r *sarama.Record) bool {
			m := &sarama.ConsumerMessage{Topic: topic, Partition: p, Offset: off, Key: r.Key, Value: r.Value, Headers: r.Headers}
			if !pipeline.IsWatermark(m.Headers) {
				out = append(out, decodeMessage(t, m))
			}
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// eosEnv is captureEnv with exactly-once delivery.
func eosEnv(cfg config.Capture) []string {
	return append(captureEnv(cfg), "CDCSYNC_DELIVERY=exactly-once")
}

// TestExactlyOnceResumeAfterSIGKILL kills capture with SIGKILL twice while
// two writers commit three-row transactions, and counts, with a
// read_committed reader, how often each committed row is on its topic. At
// least once a restart re-sends what was not confirmed yet (duplicates);
// exactly once the restarted capture drops what its Kafka checkpoint
// covers: every row exactly once.
func TestExactlyOnceResumeAfterSIGKILL(t *testing.T) {
	for _, delivery := range []string{"at-least-once", "exactly-once"} {
		t.Run(delivery, func(t *testing.T) {
			dups, missing := killTwiceCountCopies(t, delivery)
			if missing > 0 {
				t.Fatalf("%d committed rows missing", missing)
			}
			if delivery == "exactly-once" && dups > 0 {
				t.Fatalf("%d duplicates on the topic with exactly-once delivery", dups)
			}
		})
	}
}

// killTwiceCountCopies runs the kill scenario under delivery and returns
// the duplicate and missing rows a read_committed reader finds.
func killTwiceCountCopies(t *testing.T, delivery string) (dups, missing int) {
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	bin := buildBinary(t)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, ordersDDL)
	cfg := testConfig(e, db)
	cfg.Snapshot = "never"
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	vars := append(captureEnv(cfg), "CDCSYNC_DELIVERY="+delivery)
	start := func() *testenv.Process { return testenv.StartProcess(t, "capture", bin, vars, "capture") }
	proc := start()
	waitSlotActive(t, conn, cfg.Slot)

	var mu sync.Mutex
	var committed []int64
	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			wc, err := pgx.Connect(ctx, e.PG.URL(db))
			if err != nil {
				t.Error(err)
				return
			}
			defer wc.Close(ctx)
			for id := int64(w)*1_000_000 + 1; wctx.Err() == nil; id += 3 {
				_, err := wc.Exec(ctx, "INSERT INTO orders VALUES ($1, 1, 1, 'created'), ($1 + 1, 1, 1, 'created'), ($1 + 2, 1, 1, 'created')", id)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				committed = append(committed, id, id+1, id+2)
				mu.Unlock()
				time.Sleep(time.Millisecond) // a few thousand rows a second: enough to be caught in flight
			}
		})
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for range 2 {
		time.Sleep(time.Duration(800+rng.IntN(700)) * time.Millisecond)
		_ = proc.Kill()
		proc = start()
	}
	time.Sleep(time.Second)
	stopWriters()
	wg.Wait()

	var walEnd pglogrepl.LSN
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&walEnd); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "capture to confirm all writes", func() bool {
		var lsn pglogrepl.LSN
		_ = conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", cfg.Slot).Scan(&lsn)
		return lsn >= walEnd
	})
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := proc.Wait(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("capture after SIGTERM: exit %d, %v", code, err)
	}

	copies := map[int64]int{}
	for _, m := range readCommittedTopic(t, e.Kafka.Brokers(), topic) {
		var id int64
		fmt.Sscan(fmt.Sprint(m.Key["id"]), &id)
		copies[id]++
	}
	for _, id := range committed {
		switch n := copies[id]; {
		case n == 0:
			missing++
		case n > 1:
			dups += n - 1
		}
	}
	t.Logf("%s: %d committed rows, %d records read_committed, %d duplicates, %d missing", delivery, len(committed), len(copies)+dups, dups, missing)
	return dups, missing
}

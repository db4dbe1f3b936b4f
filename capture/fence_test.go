package capture

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// producerIDs returns the producer ids of the record batches in a produce
// request.
func producerIDs(req kmsg.Request) []int64 {
	pr, ok := req.(*kmsg.ProduceRequest)
	if !ok {
		return nil
	}
	var ids []int64
	for _, t := range pr.Topics {
		for _, p := range t.Partitions {
			var b kmsg.RecordBatch
			if b.ReadFrom(p.Records) == nil {
				ids = append(ids, b.ProducerID)
			}
		}
	}
	return ids
}

// TestOldSessionProducerCannotWriteLate: when a session ends while a
// produce request of its producer is still unanswered, the next session
// re-sends that change and goes on; the broker may still apply the old
// request, and it must not land after newer changes of the same key
// (issue 10 item 14). The broker holds the first session's request for
// rev2 for 8 s while serving everyone else. This is at-least-once's
// guard (producer.close); exactly once, the next session's producer fences
// the old one (TestFencedProducerCannotWrite).
func TestOldSessionProducerCannotWriteLate(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	own := ownBroker(t, e) // the test holds requests
	kafka := own.Kafka
	db := e.PG.CreateDB(t)
	conn := connect(t, own, db)
	mustExec(t, conn, ordersDDL)
	cfg := testConfig(own, db)
	cfg.Snapshot = "never"
	cfg.Delivery = "at-least-once"
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")

	const hold = 8 * time.Second
	var oldPID atomic.Int64 // producer id of the first session
	oldPID.Store(-1)
	var holdNext atomic.Bool
	held := make(chan struct{})
	cluster := kafka.Cluster()
	cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		for _, id := range producerIDs(req) {
			oldPID.CompareAndSwap(-1, id)
			if id == oldPID.Load() && holdNext.CompareAndSwap(true, false) {
				close(held)
				cluster.SleepControl(func() { time.Sleep(hold) }) // others are served meanwhile
				break
			}
		}
		return nil, nil, false // then handled as usual
	})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)), nil) }()
	defer func() { cancel(); <-done }()
	waitSlotActive(t, conn, cfg.Slot)

	notes := func() []string {
		var out []string
		for _, m := range readTopic(t, kafka.Brokers(), topic) {
			if m.Event != nil {
				var note string
				v, _ := m.Event.After.Get("note")
				_ = json.Unmarshal(v, &note)
				out = append(out, note)
			}
		}
		return out
	}
	last := func() string {
		n := notes()
		if len(n) == 0 {
			return ""
		}
		return n[len(n)-1]
	}
	mustExec(t, conn, "INSERT INTO orders VALUES (1, 1, 1, 'created', 'rev1')")
	waitFor(t, 30*time.Second, "rev1 on kafka", func() bool { return last() == "rev1" })

	holdNext.Store(true)
	mustExec(t, conn, "UPDATE orders SET note = 'rev2' WHERE id = 1")
	<-held
	var walsender int
	if err := conn.QueryRow(ctx, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", cfg.Slot).Scan(&walsender); err != nil {
		t.Fatal(err)
	}
	// End the session while rev2 is held: capture restarts it and re-sends
	// rev2 with a new producer; then a newer change follows.
	mustExec(t, conn, "SELECT pg_terminate_backend("+itoa(walsender)+")")
	waitFor(t, 60*time.Second, "a new session", func() bool {
		var pid int
		_ = conn.QueryRow(ctx, "SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1", cfg.Slot).Scan(&pid)
		return pid != 0 && pid != walsender
	})
	mustExec(t, conn, "UPDATE orders SET note = 'rev3' WHERE id = 1")
	waitFor(t, 60*time.Second, "rev3 on kafka", func() bool { return last() == "rev3" })
	// Past the hold, whatever the broker held is applied.
	time.Sleep(hold)
	if n := notes(); n[len(n)-1] != "rev3" {
		t.Fatalf("records of id 1 in topic order: %v; the latest must be rev3: the old session's request landed after the new session's", n)
	}
}

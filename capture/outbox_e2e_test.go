package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/outbox"
	"github.com/cdcsync/cdcsync/pipeline"
)

// eventRecord is one outbox record read back from Kafka.
type eventRecord struct {
	Partition int32
	Offset    int64
	Key       string
	Value     []byte
	Headers   map[string]string
}

// readEventTopic reads every record of topic present now (values are the
// events' payloads, not change envelopes, so readTopic does not apply).
func readEventTopic(t *testing.T, brokers []string, topic string) []eventRecord {
	t.Helper()
	var out []eventRecord
	consumeTopic(t, brokers, topic, func(m *sarama.ConsumerMessage) {
		r := eventRecord{Partition: m.Partition, Offset: m.Offset, Key: string(m.Key), Value: m.Value, Headers: map[string]string{}}
		for _, h := range m.Headers {
			r.Headers[string(h.Key)] = string(h.Value)
		}
		out = append(out, r)
	})
	return out
}

// outboxSetup creates orders and the outbox table in a fresh database and
// returns it with a capture configuration that routes both outbox modes.
func outboxSetup(t *testing.T, e *testenv.Env) (db string, conn *pgx.Conn, cfg config.Capture, msgPub, tablePub *outbox.Publisher) {
	t.Helper()
	db = e.PG.CreateDB(t)
	conn = connect(t, e, db)
	mustExec(t, conn, ordersDDL)
	var err error
	if msgPub, err = outbox.New(); err != nil {
		t.Fatal(err)
	}
	if tablePub, err = outbox.New(outbox.WithTable("public", "outbox"), outbox.WithDeleteAfterInsert()); err != nil {
		t.Fatal(err)
	}
	if err := tablePub.CreateTable(t.Context(), conn); err != nil {
		t.Fatal(err)
	}
	cfg = testConfig(e, db)
	cfg.OutboxPrefix = outbox.DefaultPrefix
	cfg.OutboxTable = "public.outbox"
	return db, conn, cfg, msgPub, tablePub
}

// orderEvent is the demo's OrderCreated event for order id with a
// per-aggregate sequence number in the payload.
func orderEvent(aggregateID string, seq, orderID int) outbox.Event {
	return outbox.Event{
		ID:          outbox.NewID(),
		Aggregate:   "order",
		AggregateID: aggregateID,
		Type:        "OrderCreated",
		Payload:     fmt.Appendf(nil, `{"seq": %d, "order_id": %d, "item_id": 7, "quantity": 2}`, seq, orderID),
		Headers:     map[string]string{"source": "e2e"},
	}
}

func eventSeq(t *testing.T, value []byte) int {
	t.Helper()
	var p struct{ Seq int }
	if err := json.Unmarshal(value, &p); err != nil {
		t.Fatalf("event value %q: %v", value, err)
	}
	return p.Seq
}

// TestOutboxEventsEndToEnd: orders are written together with OrderCreated
// events (both modes) through the running capture: Kafka gets each committed
// event once, per aggregate in commit order, with its payload, key and
// headers; rolled-back events never appear; malformed events in the WAL go
// to the dead-letter topic while capture keeps publishing.
func TestOutboxEventsEndToEnd(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := t.Context()
	_, conn, cfg, msgPub, tablePub := outboxSetup(t, e)
	// Listing the outbox table as a captured table too must not publish
	// its snapshot rows: this one predates capture.
	cfg.Tables = []string{"public.orders", "public.outbox"}
	old := orderEvent("old", 0, 0)
	keep, err := outbox.New(outbox.WithTable("public", "outbox"))
	if err != nil {
		t.Fatal(err)
	}
	if err := keep.Publish(ctx, conn, old); err != nil {
		t.Fatal(err)
	}
	startCapture(t, cfg)
	waitSlotActive(t, conn, cfg.Slot)

	const aggregates = 5
	committed := map[string]outbox.Event{} // by id
	rolledBack := map[string]bool{}
	byMode := map[string]string{}
	seq := map[string]int{}
	for n := range 60 {
		pub, mode := msgPub, "message"
		if n%2 == 1 {
			pub, mode = tablePub, "table"
		}
		aggID := fmt.Sprint(n % aggregates)
		var evs []outbox.Event
		for range 1 + n%2 {
			seq[aggID]++
			evs = append(evs, orderEvent(aggID, seq[aggID], n))
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO orders (id, item_id, quantity, status) VALUES ($1, 7, 2, 'created')`, n); err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(ctx, tx, evs...); err != nil {
			t.Fatal(err)
		}
		if n%5 == 4 {
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			for _, ev := range evs {
				rolledBack[ev.ID] = true
			}
			continue
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			committed[ev.ID], byMode[ev.ID] = ev, mode
		}
		if n == 30 {
			// Malformed events that bypass Publish: a non-transactional
			// message and a row without aggregate id.
			mustExec(t, conn,
				`SELECT pg_logical_emit_message(false, 'cdcsync.outbox', 'not an envelope')`,
				`INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (gen_random_uuid(), 'order', '', 'Broken', '{}')`)
		}
	}

	eventTopic := cfg.TopicPrefix + ".events.order"
	dlqTopic := cfg.TopicPrefix + ".events.dlq"
	waitFor(t, 60*time.Second, "events on Kafka", func() bool {
		return topicCount(t, e.Kafka.Brokers(), eventTopic) >= int64(len(committed)) && topicCount(t, e.Kafka.Brokers(), dlqTopic) >= 2
	})
	time.Sleep(500 * time.Millisecond) // let anything extra (a bug) arrive

	recs := readEventTopic(t, e.Kafka.Brokers(), eventTopic)
	if len(recs) != len(committed) {
		t.Errorf("%d records on %s, want %d (one per committed event)", len(recs), eventTopic, len(committed))
	}
	seen := map[string]bool{}
	lastSeq := map[string]int{}
	partitionOf := map[string]int32{}
	for _, r := range recs {
		id := r.Headers["id"]
		if rolledBack[id] {
			t.Fatalf("event %s of a rolled-back transaction is on Kafka", id)
		}
		ev, ok := committed[id]
		if !ok {
			t.Fatalf("unexpected record on %s: key %q value %s headers %v", eventTopic, r.Key, r.Value, r.Headers)
		}
		if seen[id] {
			t.Errorf("event %s delivered twice without a crash", id)
		}
		seen[id] = true
		if r.Key != ev.AggregateID || r.Headers["type"] != "OrderCreated" || r.Headers["aggregatetype"] != "order" ||
			r.Headers["content-type"] != "application/json" || r.Headers["source"] != "e2e" {
			t.Errorf("record of %s: key %q headers %v", id, r.Key, r.Headers)
		}
		if _, err := pipeline.ParsePosition(r.Headers[pipeline.HeaderPosition]); err != nil {
			t.Errorf("record of %s: position header: %v", id, err)
		}
		if byMode[id] == "message" && string(r.Value) != string(ev.Payload) {
			t.Errorf("message-mode payload %q, want exactly %q", r.Value, ev.Payload)
		}
		if s := eventSeq(t, r.Value); s <= lastSeq[r.Key] {
			t.Errorf("aggregate %s: seq %d after %d", r.Key, s, lastSeq[r.Key])
		} else {
			lastSeq[r.Key] = s
		}
		if p, ok := partitionOf[r.Key]; ok && p != r.Partition {
			t.Errorf("aggregate %s on partitions %d and %d", r.Key, p, r.Partition)
		}
		partitionOf[r.Key] = r.Partition
	}
	for id := range committed {
		if !seen[id] {
			t.Errorf("committed event %s is not on Kafka", id)
		}
	}

	dlq := readEventTopic(t, e.Kafka.Brokers(), dlqTopic)
	if len(dlq) != 2 {
		t.Fatalf("%d dead letters, want 2: %+v", len(dlq), dlq)
	}
	sources := map[string]string{}
	for _, r := range dlq {
		sources[r.Headers[HeaderOutboxSource]] = r.Headers[pipeline.HeaderDLQError]
	}
	if sources["message cdcsync.outbox"] == "" || sources["table public.outbox"] == "" {
		t.Errorf("dead letters: %v", sources)
	}
	if n := topicCount(t, e.Kafka.Brokers(), pipeline.Topic(cfg.TopicPrefix, "public", "outbox")); n != 0 {
		t.Errorf("the outbox table's own topic holds %d records, want none", n)
	}
	t.Logf("%d events on Kafka, %d rolled back, dead letters: %v", len(recs), len(rolledBack), sources)
}

// TestOutboxSurvivesSIGKILL runs capture as a process and kills it with
// SIGKILL twice while writers publish events in both modes: every committed
// event reaches Kafka at least once, re-sent copies carry the same event id
// and payload (so consumers can de-duplicate), per aggregate new events
// follow commit order, and rolled-back events never appear. It is about
// at-least-once delivery, whose re-sends it checks; exactly once, outbox
// events under kills are test/exactlyonce's TestExactlyOnceUnderCrashes.
func TestOutboxSurvivesSIGKILL(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	bin := buildBinary(t)
	db, conn, cfg, msgPub, tablePub := outboxSetup(t, e)
	cfg.Snapshot = "never"
	cfg.Delivery = "at-least-once"
	procEnv := append(captureEnv(cfg), "CDCSYNC_OUTBOX_PREFIX="+cfg.OutboxPrefix, "CDCSYNC_OUTBOX_TABLE="+cfg.OutboxTable)
	start := func() *testenv.Process { return testenv.StartProcess(t, "capture", bin, procEnv, "capture") }
	proc := start()
	waitSlotActive(t, conn, cfg.Slot)
	eventTopic := cfg.TopicPrefix + ".events.order"

	var mu sync.Mutex
	committed := map[string]outbox.Event{}
	rolledBack := map[string]bool{}
	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			wc, err := pgx.Connect(ctx, e.PG.URL(db))
			if err != nil {
				t.Error(err)
				return
			}
			defer wc.Close(ctx)
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			aggID := fmt.Sprintf("w%d", w)
			seq := 0
			for n := 0; wctx.Err() == nil; n++ {
				pub := msgPub
				if rng.IntN(2) == 0 {
					pub = tablePub
				}
				evs := make([]outbox.Event, 1+rng.IntN(3))
				for i := range evs {
					seq++
					evs[i] = orderEvent(aggID, seq, w*1_000_000+n)
				}
				rollback := rng.IntN(5) == 0
				err := pgx.BeginFunc(ctx, wc, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `INSERT INTO orders (id, item_id, quantity, status) VALUES ($1, 7, 2, 'created')`, w*1_000_000+n); err != nil {
						return err
					}
					if err := pub.Publish(ctx, tx, evs...); err != nil {
						return err
					}
					if rollback {
						return errRollbackOnPurpose
					}
					return nil
				})
				if err != nil && !errors.Is(err, errRollbackOnPurpose) {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, ev := range evs {
					if rollback {
						rolledBack[ev.ID] = true
					} else {
						committed[ev.ID] = ev
					}
				}
				mu.Unlock()
			}
		})
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	for range 2 {
		time.Sleep(time.Duration(1000+rng.IntN(1500)) * time.Millisecond)
		waitFor(t, 30*time.Second, "capture to publish events", func() bool { return topicCount(t, e.Kafka.Brokers(), eventTopic) > 0 })
		if err := proc.Kill(); err != nil {
			t.Fatal(err)
		}
		t.Logf("killed capture (pid %d) with SIGKILL; %d records on %s", proc.Pid(), topicCount(t, e.Kafka.Brokers(), eventTopic), eventTopic)
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		proc = start()
	}
	time.Sleep(time.Second)
	stopWriters()
	wg.Wait()

	waitAllConfirmed(t, conn, cfg.Slot)
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := proc.Wait(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("capture after SIGTERM: exit %d, %v\n%s", code, err, proc.Tail(20))
	}

	recs := readEventTopic(t, e.Kafka.Brokers(), eventTopic)
	copies := map[string]eventRecord{} // first copy of each event id
	lastSeq := map[string]int{}
	dups, disorder := 0, 0
	for _, r := range recs {
		id := r.Headers["id"]
		if rolledBack[id] {
			t.Fatalf("event %s of a rolled-back transaction is on Kafka", id)
		}
		if _, ok := committed[id]; !ok {
			t.Fatalf("record with unknown event id %q: %s", id, r.Value)
		}
		if first, ok := copies[id]; ok {
			dups++
			// A re-sent copy is the same event: same key, payload, headers
			// (the position too: it is where the event is in the WAL).
			if first.Key != r.Key || string(first.Value) != string(r.Value) || !reflect.DeepEqual(first.Headers, r.Headers) {
				t.Errorf("event %s re-sent differently:\n%+v\n%+v", id, first, r)
			}
			continue
		}
		copies[id] = r
		if s := eventSeq(t, r.Value); s <= lastSeq[r.Key] {
			disorder++
			if disorder <= 5 {
				t.Errorf("aggregate %s: new event seq %d after %d", r.Key, s, lastSeq[r.Key])
			}
		} else {
			lastSeq[r.Key] = s
		}
	}
	missing := 0
	for id, ev := range committed {
		if _, ok := copies[id]; !ok {
			missing++
			if missing <= 5 {
				t.Errorf("committed event %s (%s seq %d) is not on Kafka", id, ev.AggregateID, eventSeq(t, ev.Payload))
			}
		}
	}
	t.Logf("%d committed events (%d rolled back); %d records on Kafka, %d re-sent duplicates; missing %d, out of order %d",
		len(committed), len(rolledBack), len(recs), dups, missing, disorder)
	if len(committed) < 100 {
		t.Errorf("only %d events committed: the writers did not exercise the kills", len(committed))
	}
}

var errRollbackOnPurpose = errors.New("roll back on purpose")

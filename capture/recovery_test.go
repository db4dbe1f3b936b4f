package capture

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestCaptureRecoversFromPostgresAndBrokerRestarts crashes Postgres and
// restarts the broker under a running capture: it reconnects by itself and
// every row inserted around the outages reaches Kafka.
func TestCaptureRecoversFromPostgresAndBrokerRestarts(t *testing.T) {
	testenv.RequireEnv(t, env)
	ctx := context.Background()
	pg, err := testenv.StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Close)
	kafka, err := testenv.StartKafka()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	own := &testenv.Env{PG: pg, Kafka: kafka}
	db := pg.CreateDB(t)
	if err := pg.Exec(ctx, db, ordersDDL); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(own, db)
	cfg.Snapshot = "never"
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	stop := startCapture(t, cfg)
	waitSlotActive(t, connect(t, own, db), cfg.Slot)

	next := 0
	insert := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			next++
			// Postgres may still be starting: retry like an application would.
			deadline := time.Now().Add(30 * time.Second)
			for {
				err := pg.Exec(ctx, db, fmt.Sprintf("INSERT INTO orders VALUES (%d, 1, 1, 'created', NULL)", next))
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	// Distinct rows, not records: a restart re-sends from the confirmed
	// LSN (after a crash, the slot's last checkpointed one), so the
	// topic's record count runs ahead of the rows on it.
	ids := func() map[string]bool {
		seen := map[string]bool{}
		for _, m := range readTopic(t, kafka.Brokers(), topic) {
			seen[fmt.Sprint(m.Key["id"])] = true
		}
		return seen
	}
	insert(50)
	waitFor(t, 30*time.Second, "first rows", func() bool { return len(ids()) >= 50 })

	if err := pg.Restart(true); err != nil { // kill -9 and start again
		t.Fatal(err)
	}
	insert(50)
	waitFor(t, 60*time.Second, "rows after the Postgres crash", func() bool { return len(ids()) >= 100 })

	kafka.Stop()
	insert(50) // written while the broker is down
	time.Sleep(2 * time.Second)
	if err := kafka.Start(); err != nil {
		t.Fatal(err)
	}
	insert(50)
	waitFor(t, 90*time.Second, "rows after the broker restart", func() bool { return len(ids()) >= next })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	onKafka := ids()
	for i := 1; i <= next; i++ {
		if !onKafka[fmt.Sprint(i)] {
			t.Errorf("row %d never reached Kafka", i)
		}
	}
}

// TestPerKeyOrderSurvivesBrokerOutage is the soak's finding as a focused
// test: while the broker is down for longer than a few produce retries,
// updates to the same keys keep coming; afterwards each key's events, apart
// from re-sent duplicates, reach their partition in commit order.
func TestPerKeyOrderSurvivesBrokerOutage(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	own := ownBroker(t, e)
	kafka := own.Kafka
	db := e.PG.CreateDB(t)
	conn := connect(t, own, db)
	mustExec(t, conn, ordersDDL, "INSERT INTO orders SELECT g, 1, 0, 'created', NULL FROM generate_series(1, 20) g")
	cfg := testConfig(own, db)
	cfg.Snapshot = "never"
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	stop := startCapture(t, cfg)
	waitSlotActive(t, conn, cfg.Slot)

	wctx, stopWriter := context.WithCancel(ctx)
	writerDone := make(chan error, 1)
	go func() {
		for i := 0; wctx.Err() == nil; i++ {
			if _, err := conn.Exec(ctx, "UPDATE orders SET quantity = quantity + 1 WHERE id = $1", 1+i%20); err != nil {
				writerDone <- err
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		writerDone <- nil
	}()
	time.Sleep(time.Second)
	kafka.Stop()
	time.Sleep(2 * time.Second) // about what sarama's default retries last
	if err := kafka.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	stopWriter()
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	var want int64
	if err := conn.QueryRow(ctx, "SELECT sum(quantity) FROM orders").Scan(&want); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "every update on Kafka", func() bool { return topicCount(t, kafka.Brokers(), topic) >= want })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]map[pipeline.Position]bool{}
	last := map[string]pipeline.Position{}
	disorder := 0
	for _, m := range readTopic(t, kafka.Brokers(), topic) {
		if m.Event == nil {
			continue
		}
		k := fmt.Sprint(m.Key["id"])
		p := m.Event.Position()
		if seen[k] == nil {
			seen[k] = map[pipeline.Position]bool{}
		}
		if seen[k][p] {
			continue // a re-sent duplicate
		}
		seen[k][p] = true
		if p.Less(last[k]) {
			disorder++
			if disorder <= 3 {
				t.Errorf("key %s: new event at %v after %v", k, p, last[k])
			}
		}
		last[k] = p
	}
	if disorder > 0 {
		t.Fatalf("%d events reached their partition after a newer event of the same key", disorder)
	}
}

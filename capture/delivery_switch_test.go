package capture

import (
	"fmt"
	"testing"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestDeliverySwitchOnExistingSlot: exactly-once became the default, so
// an upgrade without CDCSYNC_DELIVERY set turns an at-least-once slot into
// an exactly-once one (no checkpoint on Kafka yet: it resumes from the
// slot), and an operator may switch back and forth (the next exactly-once
// run finds a checkpoint older than the slot). Each stint streams rows;
// rows written while capture is stopped are streamed by the next one.
// Every row is on the topic once.
func TestDeliverySwitchOnExistingSlot(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, ordersDDL)
	cfg := testConfig(e, db)
	cfg.Snapshot = "never"
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	next := 1
	insert := func(n int) {
		mustExec(t, conn, fmt.Sprintf("INSERT INTO orders SELECT g, 1, 1, 'created' FROM generate_series(%d, %d) g", next, next+n-1))
		next += n
	}
	for _, delivery := range []string{"at-least-once", "exactly-once", "at-least-once", "exactly-once"} {
		cfg.Delivery = delivery
		stop := startCapture(t, cfg)
		waitSlotActive(t, conn, cfg.Slot)
		insert(50)
		waitAllConfirmed(t, conn, cfg.Slot)
		if err := stop(); err != nil {
			t.Fatalf("%s: stop: %v", delivery, err)
		}
		insert(50) // while stopped: the next stint streams them
	}
	cfg.Delivery = "exactly-once"
	stop := startCapture(t, cfg)
	waitAllConfirmed(t, conn, cfg.Slot)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	copies := map[string]int{}
	for _, m := range readTopic(t, e.Kafka.Brokers(), topic) {
		if m.Event != nil {
			copies[fmt.Sprint(m.Key["id"])]++
		}
	}
	for id := 1; id < next; id++ {
		if n := copies[fmt.Sprint(id)]; n != 1 {
			t.Errorf("order %d is on the topic %d times, want once", id, n)
		}
	}
	if len(copies) != next-1 {
		t.Errorf("%d orders on the topic, want %d", len(copies), next-1)
	}
}

package capture

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestRecreatedSlotStartsNewSourceEpoch: a slot capture creates where it
// had one before (here dropped and accepted by hand, as after a failover)
// streams in a new source epoch, carried in every position header, so that
// the sinks take its events as newer whatever their LSNs; the first slot
// and every restart on an existing slot keep theirs.
func TestRecreatedSlotStartsNewSourceEpoch(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, ordersDDL, `INSERT INTO orders VALUES (1, 1, 1, 'created', NULL)`)
	cfg := testConfig(e, db)
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")

	// epochsOf returns the source epochs of each order id's records.
	epochsOf := func() map[string]map[uint32]bool {
		out := map[string]map[uint32]bool{}
		for _, m := range readTopic(t, cfg.Kafka.Brokers, topic) {
			if m.Event == nil {
				continue
			}
			pos, err := pipeline.ParsePosition(m.Headers[pipeline.HeaderPosition])
			if err != nil {
				t.Fatal(err)
			}
			id := fmt.Sprint(m.Key["id"])
			if out[id] == nil {
				out[id] = map[uint32]bool{}
			}
			out[id][pos.Epoch] = true
		}
		return out
	}
	session := func(insert int) {
		t.Helper()
		stop := startCapture(t, cfg)
		waitSlotActive(t, conn, cfg.Slot)
		mustExec(t, conn, fmt.Sprintf(`INSERT INTO orders VALUES (%d, 1, 1, 'created', NULL)`, insert))
		waitFor(t, 30*time.Second, fmt.Sprintf("order %d on the topic", insert), func() bool { return epochsOf()[fmt.Sprint(insert)] != nil })
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}

	session(2) // snapshot of 1, insert 2
	session(3) // restart on the slot
	for id, epochs := range epochsOf() {
		if len(epochs) != 1 || !epochs[0] {
			t.Fatalf("order %s: epochs %v before the slot was lost, want only 0", id, epochs)
		}
	}

	// The slot is lost and accepted by hand; order 4 is written while no
	// slot records.
	waitSlotInactive(t, conn, cfg.Slot)
	mustExec(t, conn, `SELECT pg_drop_replication_slot('`+cfg.Slot+`')`,
		`DELETE FROM cdcsync.capture_source WHERE slot = '`+cfg.Slot+`'`,
		`INSERT INTO orders VALUES (4, 1, 1, 'created', NULL)`)
	before := uint32(time.Now().Add(-time.Minute).Unix())
	session(5) // snapshot of 1..4 (maybe 5), insert 5
	session(6) // restart on the new slot

	var stored int64
	if err := conn.QueryRow(context.Background(), `SELECT source_epoch FROM cdcsync.capture_state WHERE slot = $1`, cfg.Slot).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if uint32(stored) < before {
		t.Fatalf("source epoch %d: want the Unix time the slot was created again (>= %d)", stored, before)
	}
	got := epochsOf()
	e2 := uint32(stored)
	for id, want := range map[string]map[uint32]bool{"1": {0: true, e2: true}, "2": {0: true, e2: true}, "3": {0: true, e2: true},
		"4": {e2: true}, "5": {e2: true}, "6": {e2: true}} {
		if !maps.Equal(got[id], want) {
			t.Errorf("order %s: epochs %v, want %v", id, got[id], want)
		}
	}
}

package capture

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// snapshotSoak reports whether the initial-snapshot tests run at full size
// (`make snapshot-soak`, CDCSYNC_SNAPSHOT_SOAK=1); `make test` runs them
// short.
func snapshotSoak() bool { return os.Getenv("CDCSYNC_SNAPSHOT_SOAK") != "" }

// initialMarks are source.snapshot of initial snapshot rows, as Debezium
// marks them.
var initialMarks = []string{"true", "first", "last", "first_in_data_collection", "last_in_data_collection"}

// snapWaitSlotCreated waits until slot exists.
func snapWaitSlotCreated(t *testing.T, conn *pgx.Conn, slot string) {
	t.Helper()
	waitFor(t, 60*time.Second, "slot "+slot+" to be created", func() bool {
		var n int
		_ = conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&n)
		return n == 1
	})
}

// snapWaitRows waits until the initial snapshot has at least n rows on
// Kafka and returns its backfill; it fails when the snapshot finished
// first (the test would kill nothing mid-snapshot).
func snapWaitRows(t *testing.T, list func() []Backfill, n int64) Backfill {
	t.Helper()
	var bf Backfill
	waitFor(t, 120*time.Second, "the initial snapshot to progress", func() bool {
		bfs := list()
		if len(bfs) != 1 {
			return false
		}
		bf = bfs[0]
		return bf.RowsDone >= n || bf.Finished()
	})
	if bf.Finished() {
		t.Fatalf("the initial snapshot finished (%s) before the kill; make it longer", bf.Status)
	}
	return bf
}

// snapSetup prepares a database with rows loaded orders (bfOrdersDDL), a
// capture configuration reading it in chunks of chunk rows, its
// environment for the binary, and a lister of the slot's backfills.
func snapSetup(t *testing.T, rows, chunk int) (e *testenv.Env, conn *pgx.Conn, cfg config.Capture, procEnv []string, list func() []Backfill) {
	t.Helper()
	e = testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	conn = connect(t, e, db)
	mustExec(t, conn, bfOrdersDDL)
	bfLoadOrders(t, conn, rows)
	cfg = testConfig(e, db)
	cfg.SnapshotChunkSize = chunk
	procEnv = append(captureEnv(cfg), "CDCSYNC_SNAPSHOT_CHUNK_SIZE="+itoa(chunk))
	list = func() []Backfill {
		bfs, err := ListBackfills(t.Context(), conn, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return bfs
	}
	return e, conn, cfg, procEnv, list
}

// TestTwoCapturesStartTogetherOnNewSlot starts two capture processes within
// the same second on a new slot over existing rows while four writers
// insert, update and delete, and SIGKILLs the active one mid-snapshot
// (issue 10 item 1). The standby only waits and then resumes the snapshot:
// the slot is created once, and replaying the topic gives every row as in
// Postgres, deleted rows ending deleted.
func TestTwoCapturesStartTogetherOnNewSlot(t *testing.T) {
	rows, chunk := 30_000, 1000
	if snapshotSoak() {
		rows, chunk = 200_000, 5000
	}
	bin := buildBinary(t)
	e, conn, cfg, env, list := snapSetup(t, rows, chunk)
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")

	procs := []*testenv.Process{
		testenv.StartProcess(t, "capture-a", bin, env, "capture"),
		testenv.StartProcess(t, "capture-b", bin, env, "capture"),
	}
	snapWaitSlotCreated(t, conn, cfg.Slot)
	// Every change from here on is in the slot's stream.
	stopWriters := bfWriters(t, cfg.SourceURL, int64(rows))
	atKill := snapWaitRows(t, list, int64(rows/3))
	active := -1
	for i, p := range procs {
		if strings.Contains(p.Output(), "backfill started") {
			active = i
		}
	}
	if active < 0 {
		t.Fatal("no capture logged that it started the snapshot")
	}
	if err := procs[active].Kill(); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the active capture (%s) with SIGKILL at %d/%d snapshot rows", []string{"a", "b"}[active], atKill.RowsDone, rows)
	standby := procs[1-active]

	waitFor(t, 180*time.Second, "the standby to finish the snapshot", func() bool {
		bfs := list()
		return len(bfs) == 1 && bfs[0].Finished()
	})
	time.Sleep(300 * time.Millisecond) // writes after the snapshot too
	ops := stopWriters()
	bf := list()[0]
	if bf.Status != BackfillDone {
		t.Fatalf("snapshot %s: %s", bf.Status, bf.Error)
	}
	waitAllConfirmed(t, conn, cfg.Slot)
	n := bfCheckTopic(t, conn, e.Kafka.Brokers(), topic, initialMarks...)

	created := 0
	for _, p := range procs {
		created += strings.Count(p.Output(), "created replication slot")
		if strings.Contains(p.Output(), "recreating the slot") {
			t.Errorf("a capture recreated the slot:\n%s", p.Tail(2000))
		}
	}
	if created != 1 {
		t.Errorf("the slot was created %d times, want once", created)
	}
	if !strings.Contains(standby.Output(), "backfill resumed") {
		t.Errorf("the standby did not resume the snapshot:\n%s", standby.Tail(3000))
	}
	t.Logf("snapshot: %d rows read (%d skipped), %d snapshot rows on the topic; %d concurrent writes", bf.RowsDone, bf.RowsSkipped, n, ops)
}

// TestInitialSnapshotResumesAfterSIGKILL kills capture twice during its
// initial snapshot while writers run (issue 10 items 3 and 4): each restart
// resumes from the stored progress, reading at most one chunk again per
// kill, the slot is never dropped, and replaying the topic gives exactly
// the rows in Postgres, deleted rows ending deleted.
func TestInitialSnapshotResumesAfterSIGKILL(t *testing.T) {
	rows, chunk := 60_000, 2000
	if snapshotSoak() {
		rows, chunk = 500_000, 5000
	}
	bin := buildBinary(t)
	e, conn, cfg, env, list := snapSetup(t, rows, chunk)
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")

	proc := testenv.StartProcess(t, "capture", bin, env, "capture")
	snapWaitSlotCreated(t, conn, cfg.Slot)
	stopWriters := bfWriters(t, cfg.SourceURL, int64(rows))
	var killedAt []int64
	for kill := 1; kill <= 2; kill++ {
		bf := snapWaitRows(t, list, int64(rows*kill/3))
		if err := proc.Kill(); err != nil {
			t.Fatal(err)
		}
		killedAt = append(killedAt, bf.RowsDone)
		t.Logf("kill %d: SIGKILL at %d/%d snapshot rows", kill, bf.RowsDone, rows)
		time.Sleep(300 * time.Millisecond) // writers go on while capture is down
		proc = testenv.StartProcess(t, "capture", bin, env, "capture")
	}
	waitFor(t, 180*time.Second, "the snapshot to finish", func() bool {
		bfs := list()
		return len(bfs) == 1 && bfs[0].Finished()
	})
	time.Sleep(300 * time.Millisecond)
	ops := stopWriters()
	bf := list()[0]
	if bf.Status != BackfillDone {
		t.Fatalf("snapshot %s: %s", bf.Status, bf.Error)
	}
	if !strings.Contains(proc.Output(), "backfill resumed") || strings.Contains(proc.Output(), "recreating the slot") {
		t.Errorf("the restarted capture did not resume the snapshot:\n%s", proc.Tail(3000))
	}
	waitAllConfirmed(t, conn, cfg.Slot)
	n := bfCheckTopic(t, conn, e.Kafka.Brokers(), topic, initialMarks...)
	// Rows read again = snapshot rows on the topic beyond those the
	// snapshot counts as emitted once.
	reread := int64(n) - (bf.RowsDone - bf.RowsSkipped)
	t.Logf("snapshot: %d rows read (%d skipped), %d snapshot rows on the topic, %d read again over 2 kills (chunk %d); killed at %v; %d concurrent writes",
		bf.RowsDone, bf.RowsSkipped, n, reread, chunk, killedAt, ops)
	if reread > int64(2*chunk) {
		t.Errorf("%d rows read again over 2 kills, more than one chunk (%d) per kill", reread, chunk)
	}
}

// TestStopRightAfterSlotCreatedStillSnapshots stops capture right after
// CREATE_REPLICATION_SLOT returned, before anything else happened (issue 10
// item 2): the next start must still emit the existing rows, because the
// snapshot was recorded before the slot was created.
func TestStopRightAfterSlotCreatedStillSnapshots(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	const rows = 500
	mustExec(t, conn, bfOrdersDDL)
	bfLoadOrders(t, conn, rows)
	cfg := testConfig(e, db)
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")

	ctx, cancel := context.WithCancel(t.Context())
	reached := make(chan struct{})
	done := make(chan error, 1)
	hook := func(o *options) {
		o.afterSlotCreated = func(ctx context.Context) {
			close(reached)
			<-ctx.Done() // the "crash": nothing after this point runs
		}
	}
	logger := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	go func() { done <- Run(ctx, cfg, logger, nil, hook) }()
	select {
	case <-reached:
	case <-time.After(60 * time.Second):
		t.Fatal("capture did not create its slot")
	}
	cancel()
	<-done
	var slots int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", cfg.Slot).Scan(&slots); err != nil || slots != 1 {
		t.Fatalf("slot after the stop: %d (%v), want it created", slots, err)
	}

	startCapture(t, cfg)
	waitFor(t, 60*time.Second, "the existing rows on Kafka", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= rows })
	ids := map[string]bool{}
	for _, m := range readTopic(t, e.Kafka.Brokers(), topic) {
		if m.Event != nil && m.Event.Op == pipeline.OpRead && slices.Contains(initialMarks, m.Event.Source.Snapshot) {
			ids[fmt.Sprint(m.Key["id"])] = true
		}
	}
	if len(ids) != rows {
		t.Fatalf("%d of %d existing rows arrived as snapshot rows", len(ids), rows)
	}
}

// TestTableAddedLaterIsSnapshotted restarts capture with two tables added
// to CDCSYNC_TABLES, one already in the publication and one not (issue 10
// item 10's last sentence): both are read as backfills, and the table
// captured from the start is not read again.
func TestTableAddedLaterIsSnapshotted(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, bfOrdersDDL,
		`CREATE TABLE extra_a (id bigint PRIMARY KEY, v text)`,
		`CREATE TABLE extra_b (id bigint PRIMARY KEY, v text)`,
		`INSERT INTO extra_a SELECT g, 'a' || g FROM generate_series(1, 20) g`,
		`INSERT INTO extra_b SELECT g, 'b' || g FROM generate_series(1, 30) g`)
	bfLoadOrders(t, conn, 10)
	cfg := testConfig(e, db)
	topicOf := func(table string) string { return pipeline.Topic(cfg.TopicPrefix, "public", table) }
	stop := startCapture(t, cfg)
	waitFor(t, 30*time.Second, "the orders snapshot", func() bool { return topicCount(t, e.Kafka.Brokers(), topicOf("orders")) >= 10 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mustExec(t, conn, "ALTER PUBLICATION "+cfg.Publication+" ADD TABLE extra_a")

	cfg.Tables = []string{"public.orders", "public.extra_a", "public.extra_b"}
	startCapture(t, cfg)
	waitFor(t, 60*time.Second, "the added tables' rows", func() bool {
		return topicCount(t, e.Kafka.Brokers(), topicOf("extra_a")) >= 20 && topicCount(t, e.Kafka.Brokers(), topicOf("extra_b")) >= 30
	})
	mustExec(t, conn, "UPDATE orders SET rev = 1 WHERE id = 1")
	waitFor(t, 30*time.Second, "a streamed change", func() bool { return topicCount(t, e.Kafka.Brokers(), topicOf("orders")) >= 11 })
	if n := topicCount(t, e.Kafka.Brokers(), topicOf("orders")); n != 11 {
		t.Errorf("orders topic has %d records, want its 10 snapshot rows and 1 change (read again?)", n)
	}
	for table, want := range map[string]int{"extra_a": 20, "extra_b": 30} {
		reads := 0
		for _, m := range readTopic(t, e.Kafka.Brokers(), topicOf(table)) {
			if m.Event != nil && m.Event.Op == pipeline.OpRead {
				reads++
			}
		}
		if reads != want {
			t.Errorf("%s: %d snapshot rows, want %d", table, reads, want)
		}
	}
}

// TestLostLockConnectionStopsAndReacquires terminates the backend holding
// the slot's advisory lock: capture must stop producing at once (another
// capture could take over now), take the lock again and stream on.
func TestLostLockConnectionStopsAndReacquires(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := t.Context()
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, ordersDDL)
	cfg := testConfig(e, db)
	cfg.Snapshot = "never"
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	startCapture(t, cfg)
	waitSlotActive(t, conn, cfg.Slot)
	holder := func() (pid int32) {
		_ = conn.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
			AND classid = $1::int4::oid AND objid = $2::int4::oid AND objsubid = 2`, lockClass, slotLockKey(cfg.Slot)).Scan(&pid)
		return pid
	}
	walsender := func() (pid int32) {
		_ = conn.QueryRow(ctx, `SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&pid)
		return pid
	}
	// The slot is active while it is created too: wait for both.
	var lockPID, streamPID int32
	waitFor(t, 30*time.Second, "the lock holder and the walsender", func() bool {
		lockPID, streamPID = holder(), walsender()
		return lockPID != 0 && streamPID != 0
	})
	mustExec(t, conn, fmt.Sprintf("SELECT pg_terminate_backend(%d)", lockPID))
	waitFor(t, 30*time.Second, "capture to end the session and take the lock again", func() bool {
		l, w := holder(), walsender()
		return l != 0 && l != lockPID && w != 0 && w != streamPID
	})
	mustExec(t, conn, "INSERT INTO orders VALUES (1, 1, 1, 'created', NULL)")
	waitFor(t, 30*time.Second, "a change after the new session", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 1 })
}

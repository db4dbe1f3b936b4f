package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// committedKeys returns the keys of the records of topic a read_committed
// consumer sees now.
func committedKeys(t *testing.T, brokers []string, topic string) []string {
	t.Helper()
	var keys []string
	testenv.ConsumeTopic(t, brokers, topic, func(m *sarama.ConsumerMessage) { keys = append(keys, string(m.Key)) })
	return keys
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

	waitAllConfirmed(t, conn, cfg.Slot)
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := proc.Wait(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("capture after SIGTERM: exit %d, %v", code, err)
	}

	copies := map[int64]int{}
	for _, m := range readTopic(t, e.Kafka.Brokers(), topic) {
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

// failCommits makes the broker answer every EndTxn with a retriable
// error (COORDINATOR_LOAD_IN_PROGRESS) until the returned function is
// called: Kafka transactions stay open while produce requests go on being
// acknowledged.
func failCommits(t *testing.T, cluster *kfake.Cluster) (restore func()) {
	t.Helper()
	var failing atomic.Bool
	failing.Store(true)
	cluster.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if !failing.Load() {
			cluster.DropControl()
			return nil, nil, false
		}
		cluster.KeepControl()
		resp := req.ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode = kerr.CoordinatorLoadInProgress.Code
		return resp, nil, true
	})
	restore = func() { failing.Store(false) }
	t.Cleanup(restore)
	return restore
}

func slotConfirmed(t *testing.T, conn *pgx.Conn, slot string) pglogrepl.LSN {
	t.Helper()
	var lsn pglogrepl.LSN
	if err := conn.QueryRow(t.Context(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	return lsn
}

func currentLSN(t *testing.T, conn *pgx.Conn) pglogrepl.LSN {
	t.Helper()
	var lsn pglogrepl.LSN
	if err := conn.QueryRow(t.Context(), "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	return lsn
}

// TestExactlyOnceConfirmsOnlyCommitted holds a Kafka commit back (the
// broker fails EndTxn) while the rows of a Postgres transaction are
// acknowledged: the slot's confirmed LSN must not pass what is committed
// on Kafka, or a crash then would lose the rows for read_committed
// consumers. Once the commit goes through, it follows.
func TestExactlyOnceConfirmsOnlyCommitted(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	own := ownBroker(t, e) // the test fails the broker's commits
	db := e.PG.CreateDB(t)
	conn := connect(t, own, db)
	mustExec(t, conn, ordersDDL)
	cfg := testConfig(own, db)
	cfg.Snapshot = "never"
	cfg.Delivery = "exactly-once"
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	startCapture(t, cfg)
	waitSlotActive(t, conn, cfg.Slot)

	mustExec(t, conn, "INSERT INTO orders VALUES (1, 1, 1, 'created')")
	first := currentLSN(t, conn)
	waitFor(t, 30*time.Second, "the first row committed and confirmed", func() bool {
		return len(readTopic(t, own.Kafka.Brokers(), topic)) == 1 && slotConfirmed(t, conn, cfg.Slot) >= first
	})

	restore := failCommits(t, own.Kafka.Cluster())
	before := slotConfirmed(t, conn, cfg.Slot)
	mustExec(t, conn, "INSERT INTO orders SELECT g, 1, 1, 'created' FROM generate_series(2, 101) g")
	after := currentLSN(t, conn)
	waitFor(t, 30*time.Second, "the rows acknowledged (in the open transaction)", func() bool {
		return topicOffsets(t, own.Kafka.Brokers(), topic) >= 101
	})
	time.Sleep(5 * cfg.StatusInterval) // status updates and heartbeats meanwhile
	if got := slotConfirmed(t, conn, cfg.Slot); got >= after {
		t.Fatalf("slot confirmed %s, past the uncommitted transaction ending at %s (confirmed before it: %s)", got, after, before)
	}
	if n := len(readTopic(t, own.Kafka.Brokers(), topic)); n != 1 {
		t.Fatalf("read_committed sees %d records while the transaction is open, want 1", n)
	}
	restore()
	waitFor(t, 60*time.Second, "the commit and the confirmation after it", func() bool {
		return len(readTopic(t, own.Kafka.Brokers(), topic)) == 101 && slotConfirmed(t, conn, cfg.Slot) >= after
	})
	// The checkpoint (what `cdcsync status` shows) covers the transaction.
	client, err := sarama.NewClient(own.Kafka.Brokers(), testenv.SaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	cp, found, err := ReadCheckpoint(client, cfg.TopicPrefix, cfg.Slot)
	if err != nil || !found || cp.LSN <= before || cp.LSN > after {
		t.Fatalf("checkpoint %+v (found %v, %v); want its LSN in (%s, %s]", cp, found, err, before, after)
	}
}

// TestExactlyOnceOpenTransactionAbortedOnRestart kills capture while its
// Kafka transaction is open (the broker fails its commits): the records
// written in it are on the partitions but never visible read_committed;
// the restarted capture's producer initialisation aborts that transaction,
// and the rows arrive once, in a new one.
func TestExactlyOnceOpenTransactionAbortedOnRestart(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	own := ownBroker(t, e)
	bin := buildBinary(t)
	db := e.PG.CreateDB(t)
	conn := connect(t, own, db)
	mustExec(t, conn, ordersDDL)
	cfg := testConfig(own, db)
	cfg.Snapshot = "never"
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	brokers := own.Kafka.Brokers()
	proc := testenv.StartProcess(t, "capture", bin, eosEnv(cfg), "capture")
	waitSlotActive(t, conn, cfg.Slot)

	restore := failCommits(t, own.Kafka.Cluster())
	const rows = 200
	mustExec(t, conn, fmt.Sprintf("INSERT INTO orders SELECT g, 1, 1, 'created' FROM generate_series(1, %d) g", rows))
	waitFor(t, 30*time.Second, "the rows written into the open transaction", func() bool {
		return topicOffsets(t, brokers, topic) >= rows
	})
	_ = proc.Kill()
	restore()
	if n := len(readTopic(t, brokers, topic)); n != 0 {
		t.Fatalf("read_committed sees %d records of the killed capture's open transaction", n)
	}
	proc = testenv.StartProcess(t, "capture", bin, eosEnv(cfg), "capture")
	after := currentLSN(t, conn)
	waitFor(t, 60*time.Second, "the restarted capture to confirm the rows", func() bool { return slotConfirmed(t, conn, cfg.Slot) >= after })
	msgs := readTopic(t, brokers, topic)
	ids := map[string]int{}
	for _, m := range msgs {
		ids[fmt.Sprint(m.Key["id"])]++
	}
	if len(msgs) != rows || len(ids) != rows {
		t.Fatalf("read_committed: %d records of %d ids, want each of the %d rows once (the aborted copies never)", len(msgs), len(ids), rows)
	}
	if total := topicOffsets(t, brokers, topic); total < 2*rows {
		t.Fatalf("%d records on the partitions; want the aborted copy and the committed one (at least %d)", total, 2*rows)
	}
	_ = proc.Signal(syscall.SIGTERM)
	if code, err := proc.Wait(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("capture after SIGTERM: exit %d, %v", code, err)
	}
}

// TestFencedProducerCannotWrite: a second producer of the same slot (a
// capture that took the slot over) fences the first. The first one's open
// transaction is aborted, its later writes and its commit fail with
// ErrFenced, and nothing of it after the fence is ever visible.
func TestFencedProducerCannotWrite(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	cfg := testConfig(e, "unused")
	cfg.Delivery = "exactly-once"
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	noKeepAlive := func(context.Context) error { return nil }
	start := func() *producer {
		tr := pipeline.NewTracker(100)
		tr.HoldUntilReleased()
		p, err := newProducer(cfg, tr, m)
		if err != nil {
			t.Fatal(err)
		}
		p.txn = newTxn(p.ap, cfg, slog.New(slog.DiscardHandler), m, tr)
		p.txn.deliveryErr = p.deliveryErr
		go p.ackLoop()
		t.Cleanup(func() { _ = p.close(time.Second, time.Second) })
		if err := p.ensureTableTopic(topic); err != nil {
			t.Fatal(err)
		}
		if err := p.ensureTopic(pipeline.CheckpointTopic(cfg.TopicPrefix)); err != nil {
			t.Fatal(err)
		}
		return p
	}
	record := func(id int) Record {
		return Record{Topic: topic, Key: fmt.Appendf(nil, `{"id":%d}`, id), Value: []byte(`{}`)}
	}
	write := func(p *producer, id int) error {
		return p.send(ctx, record(id), noKeepAlive, cfg.StatusInterval)
	}
	commit := func(p *producer) error { return p.txn.commit(ctx, noKeepAlive, cfg.StatusInterval) }

	old := start()
	if err := write(old, 1); err != nil {
		t.Fatal(err)
	}
	if err := commit(old); err != nil {
		t.Fatal(err)
	}
	if err := write(old, 2); err != nil { // left open: the next producer aborts it
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the open transaction's record on the partition", func() bool { return topicOffsets(t, e.Kafka.Brokers(), topic) >= 2 })

	newer := start() // InitProducerID with the same transactional.id
	err = write(old, 3)
	if err == nil {
		err = commit(old)
	}
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("the fenced producer's write and commit: %v, want ErrFenced (delivery: %v; state %s)", err, old.err(), old.ap.TxnStatus())
	}
	if err := write(newer, 4); err != nil {
		t.Fatal(err)
	}
	if err := commit(newer); err != nil {
		t.Fatal(err)
	}
	got := committedKeys(t, e.Kafka.Brokers(), topic)
	slices.Sort(got)
	if !slices.Equal(got, []string{`{"id":1}`, `{"id":4}`}) {
		t.Fatalf("read_committed sees ids %v, want [1 4] (2 aborted by the fence, 3 refused)", got)
	}
}

// TestExactlyOnceInitialSnapshot runs the initial snapshot (a watermark
// backfill) exactly once in-process, with watermarks on and a writer
// updating rows meanwhile: every row is on the topic read_committed, the
// snapshot's rows once each, and the checkpoint carries the backfill's
// progress with its last chunk.
func TestExactlyOnceInitialSnapshot(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, ordersDDL)
	const rows = 1000
	mustExec(t, conn, fmt.Sprintf("INSERT INTO orders SELECT g, 1, 1, 'created' FROM generate_series(1, %d) g", rows))
	cfg := testConfig(e, db)
	cfg.Delivery = "exactly-once"
	cfg.SnapshotChunkSize = 100
	cfg.WatermarkInterval = 10 * time.Millisecond
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	startCapture(t, cfg)
	writer := connect(t, e, db)
	wctx, stopWriter := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; wctx.Err() == nil; i++ {
			_, _ = writer.Exec(wctx, "UPDATE orders SET quantity = quantity + 1 WHERE id = $1", 1+i%rows)
			time.Sleep(2 * time.Millisecond)
		}
	})
	var done Backfill
	waitFor(t, 60*time.Second, "the initial snapshot to finish", func() bool {
		bfs, err := ListBackfills(t.Context(), conn, cfg, nil)
		if err != nil || len(bfs) != 1 {
			return false
		}
		done = bfs[0]
		return done.Finished()
	})
	stopWriter()
	wg.Wait()
	if done.Status != BackfillDone || done.RowsDone != rows {
		t.Fatalf("initial snapshot %s with %d rows done, want done with %d", done.Status, done.RowsDone, rows)
	}
	after := currentLSN(t, conn)
	waitFor(t, 30*time.Second, "the writer's changes confirmed", func() bool { return slotConfirmed(t, conn, cfg.Slot) >= after })

	snapshot := map[string]int{}
	for _, m := range readTopic(t, e.Kafka.Brokers(), topic) {
		if m.Event != nil && m.Event.Op == pipeline.OpRead {
			snapshot[fmt.Sprint(m.Key["id"])]++
		}
	}
	twice := 0
	for _, n := range snapshot {
		if n > 1 {
			twice++
		}
	}
	// A row the stream changed while its chunk was read is left out of
	// the chunk (the stream has it): rows_skipped of them.
	if twice > 0 || int64(len(snapshot)) != rows-done.RowsSkipped {
		t.Fatalf("snapshot rows read_committed: %d ids, %d of them more than once; want %d once each", len(snapshot), twice, rows-done.RowsSkipped)
	}
	client, err := sarama.NewClient(e.Kafka.Brokers(), testenv.SaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	cp, found, err := ReadCheckpoint(client, cfg.TopicPrefix, cfg.Slot)
	if err != nil || !found {
		t.Fatalf("checkpoint: found %v, %v", found, err)
	}
	if m, ok := cp.Backfills[done.ID]; !ok || m.RowsDone != rows || m.ChunksDone != done.ChunksDone {
		t.Fatalf("checkpoint progress of backfill %d: %+v (present %v); want %d rows in %d chunks", done.ID, m, ok, rows, done.ChunksDone)
	}
}

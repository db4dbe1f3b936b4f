package exactlyonce

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/capture"
	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// snapshotRows is the number of existing rows per table the snapshot
// tests read (and kill capture in the middle of).
func snapshotRows() int {
	if soak() {
		return 200_000
	}
	return 30_000
}

// loadRows inserts n rows into each table.
func (s *setup) loadRows(n int) {
	s.t.Helper()
	for _, table := range tables {
		s.exec(fmt.Sprintf(`INSERT INTO %s SELECT g, 0, g, repeat('x', 200) FROM generate_series(1, %d) g`, table, n))
	}
}

// backfills lists the slot's backfills (the initial snapshot is one).
func (s *setup) backfills() []capture.Backfill {
	s.t.Helper()
	bfs, err := capture.ListBackfills(context.Background(), s.conn, config.Capture{StateSchema: "cdcsync", Slot: s.slot}, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return bfs
}

// rowsDone is the rows the slot's latest backfill has read, and whether
// it has finished.
func (s *setup) rowsDone() (int64, bool) {
	var n int64
	finished := true
	for _, bf := range s.backfills() {
		n += bf.RowsDone
		finished = finished && bf.Finished()
	}
	return n, finished
}

// killDuringBackfill SIGKILLs the capture process twice and restarts it,
// and returns the running capture. The first kill comes after a third of
// total rows, between a chunk's Kafka commit and the moment capture
// stores its progress in Postgres (the test holds the backfill's row lock,
// so storing waits); the second after two thirds, while a chunk is being
// written (records beyond the stored progress reach the broker).
func (s *setup) killDuringBackfill(proc *testenv.Process, total int64) *testenv.Process {
	s.t.Helper()
	for kill := int64(1); kill <= 2; kill++ {
		var done int64
		var finished bool
		waitFor(s.t, 3*time.Minute, "the backfill to progress", func() bool {
			done, finished = s.rowsDone()
			return done >= total*kill/3 || (finished && done > 0)
		})
		var release func()
		if kill == 1 {
			done, release = s.holdProgress()
		} else {
			done, finished = s.caughtWriting()
		}
		if finished {
			s.t.Fatalf("the backfill finished (%d rows) before kill %d; make it larger", done, kill)
		}
		pid, _ := s.slotState()
		if err := proc.Kill(); err != nil {
			s.t.Fatal(err)
		}
		if release != nil {
			release()
		}
		s.t.Logf("capture SIGKILLed at %d/%d rows read (stored progress), broker end %d, visible end %d", done, total,
			s.topicEnd(sarama.ReadUncommitted), s.topicEnd(sarama.ReadCommitted))
		proc = s.capture()
		s.waitStreaming(pid)
	}
	return proc
}

// holdProgress locks the running backfill's row, so that capture cannot
// store its progress, and waits until a chunk beyond the stored progress
// is visible to read_committed readers. It returns the stored rows and
// the release of the lock.
func (s *setup) holdProgress() (int64, func()) {
	s.t.Helper()
	ctx := context.Background()
	tx, err := s.connect().Begin(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	var id, done int64
	if err := tx.QueryRow(ctx, `SELECT id, rows_done FROM cdcsync.backfills WHERE slot = $1 AND status = 'running' FOR UPDATE`, s.slot).Scan(&id, &done); err != nil {
		s.t.Fatalf("lock the running backfill: %v", err)
	}
	visible := s.topicEnd(sarama.ReadCommitted)
	waitFor(s.t, time.Minute, "a chunk committed beyond the stored progress", func() bool {
		return s.topicEnd(sarama.ReadCommitted) >= visible+1000
	})
	// The release ends capture's waiting UPDATE before it can take the
	// lock: a killed client's statement would otherwise still commit.
	return done, func() {
		s.exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)
		_ = tx.Rollback(ctx)
	}
}

// caughtWriting waits until the broker's end grows while the stored
// progress stays where it was (a chunk is being written), and returns
// the stored rows.
func (s *setup) caughtWriting() (done int64, finished bool) {
	s.t.Helper()
	prevDone, _ := s.rowsDone()
	prevEnd := s.topicEnd(sarama.ReadUncommitted)
	deadline := time.Now().Add(time.Minute)
	for !finished && time.Now().Before(deadline) {
		end := s.topicEnd(sarama.ReadUncommitted)
		done, finished = s.rowsDone()
		if done == prevDone && end > prevEnd {
			return done, false
		}
		prevDone, prevEnd = done, end
	}
	return done, finished
}

// checkRowsOnce reads the topics read_committed and checks that every
// row of the tables is there as a snapshot row (op r) exactly once.
func (s *setup) checkRowsOnce(perTable int) {
	s.t.Helper()
	recs := s.readCommitted()
	count := map[string]map[int64]int{}
	for _, r := range recs {
		if r.Op != pipeline.OpRead {
			continue
		}
		if count[r.Topic] == nil {
			count[r.Topic] = map[int64]int{}
		}
		count[r.Topic][r.ID]++
	}
	twice, missing, rows := 0, 0, 0
	for _, topic := range s.topics[:len(tables)] { // the events topic has no rows
		for id := int64(1); id <= int64(perTable); id++ {
			switch n := count[topic][id]; {
			case n == 0:
				missing++
			case n > 1:
				if twice++; twice <= 5 {
					s.t.Errorf("%s id %d: %d snapshot rows", topic, id, n)
				}
			}
			rows += count[topic][id]
		}
	}
	s.t.Logf("delivery %s: read_committed: %d snapshot rows for %d rows: %d rows more than once, %d missing", delivery(), rows, perTable*len(tables), twice, missing)
	if twice > 0 || missing > 0 {
		s.t.Fatalf("%d rows on the topics more than once, %d missing", twice, missing)
	}
}

// TestInitialSnapshotSIGKILLNoRowTwice (issue 12): capture is SIGKILLed
// twice during its initial snapshot (CDCSYNC_SNAPSHOT=initial) of
// existing rows; a read_committed reader finds each row once.
func TestInitialSnapshotSIGKILLNoRowTwice(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	n := snapshotRows()
	s := newSetup(t, e.PG, e.Kafka, "CDCSYNC_SNAPSHOT=initial", "CDCSYNC_SNAPSHOT_CHUNK_SIZE=1000")
	s.loadRows(n)
	proc := s.capture()
	proc = s.killDuringBackfill(proc, int64(n*len(tables)))
	waitFor(t, 5*time.Minute, "the snapshot to finish", func() bool {
		_, finished := s.rowsDone()
		return finished
	})
	if bfs := s.backfills(); len(bfs) == 0 || bfs[0].Status != capture.BackfillDone {
		t.Fatalf("snapshot: %+v", bfs)
	}
	s.waitConfirmed(2 * time.Minute)
	stop(t, proc)
	if !strings.Contains(proc.Output(), "backfill resumed") {
		t.Logf("the restarted capture did not log that it resumed the snapshot:\n%s", proc.Tail(2000))
	}
	s.checkRowsOnce(n)
}

// TestReplaySnapshotSIGKILLNoRowTwice (issue 12): `cdcsync replay
// snapshot` backfills both tables while capture runs; capture is SIGKILLed
// twice during it; the command still ends done and a read_committed
// reader finds each row once.
func TestReplaySnapshotSIGKILLNoRowTwice(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	n := snapshotRows()
	s := newSetup(t, e.PG, e.Kafka)
	s.loadRows(n)
	proc := s.capture()
	s.waitStreaming(0)
	replay := testenv.StartProcess(t, "replay", s.bin, s.env, "replay", "snapshot",
		"--tables", "public.orders,public.lines", "--chunk-size", "1000")
	proc = s.killDuringBackfill(proc, int64(n*len(tables)))
	code, err := replay.Wait(5 * time.Minute)
	if err != nil || code != 0 {
		t.Fatalf("replay snapshot: exit %d, %v\n%s", code, err, replay.Tail(2000))
	}
	s.waitConfirmed(2 * time.Minute)
	stop(t, proc)
	s.checkRowsOnce(n)
}

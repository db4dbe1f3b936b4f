package exactlyonce

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// captureLockClass is the first key of the advisory lock a capture holds
// while it owns its slot (capture/lock.go), "cdcs".
const captureLockClass = 0x63646373

// TestPausedActiveIsFenced (issue 12): the active capture is SIGSTOPped
// while a 20,000-row transaction streams under four writers. Its Postgres
// sessions are ended, as the server does with a peer that went silent, so
// the standby (a second capture process on the same slot) takes over and
// goes on. Then the old active is SIGCONTed with whatever it still held:
// none of that may reach the topics (the standby's transactional producer
// fenced it), and a read_committed read ends exact.
func TestPausedActiveIsFenced(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	s := newSetup(t, e.PG, e.Kafka)
	active := s.capture()
	activePID := s.waitStreaming(0)
	standby := s.capture()
	waitFor(t, 30*time.Second, "the second capture to stand by", func() bool {
		return strings.Contains(standby.Output(), "standing by")
	})

	ld := startLoad(t, s, 2*time.Second)
	ld.waitBig(t, time.Minute)
	time.Sleep(150 * time.Millisecond) // capture is streaming it
	if err := active.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	pausedAt, stopped := time.Now(), true
	defer func() {
		if stopped {
			_ = active.Signal(syscall.SIGCONT)
		}
	}()
	held := s.topicEnd(sarama.ReadUncommitted) - s.topicEnd(sarama.ReadCommitted)
	t.Logf("active capture SIGSTOPped; %d records beyond the last stable offsets", held)

	// The server ends the sessions of a client that went silent
	// (wal_sender_timeout, TCP keepalives); end them now.
	var lockHolder int
	if err := s.conn.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND classid = $1::int4::oid AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		captureLockClass).Scan(&lockHolder); err != nil {
		t.Fatalf("the active capture's slot lock: %v", err)
	}
	s.exec("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", []int{activePID, lockHolder})
	s.waitStreaming(activePID)
	t.Logf("the standby took over %v after the pause", time.Since(pausedAt).Round(100*time.Millisecond))
	time.Sleep(3 * time.Second) // the standby produces meanwhile

	if err := active.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	time.Sleep(5 * time.Second) // whatever the old active still sends, it sends now
	ld.finish(s, 3*time.Minute)
	if !active.Exited() {
		t.Logf("the old active is still running after SIGCONT (it may have become a standby)")
		_ = active.Kill()
	}
	stop(t, standby)
	t.Logf("old active's log after SIGCONT (last 1.5KB):\n%s", active.Tail(1500))
	ld.check(s, "active SIGSTOPped, standby took over, old active SIGCONTed")
}

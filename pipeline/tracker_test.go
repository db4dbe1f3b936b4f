package pipeline

import (
	"math/rand/v2"
	"testing"

	"github.com/jackc/pglogrepl"
)

func TestTrackerConfirmsOnlyContiguousPrefix(t *testing.T) {
	tr := NewTracker(8)
	a, b := tr.Add(), tr.Add()
	tr.Commit(100) // tx 1: a, b
	c := tr.Add()
	tr.Commit(200) // tx 2: c

	tr.Ack(c) // out of order: tx 2 acked before tx 1
	if got := tr.Confirmed(); got != 0 {
		t.Fatalf("confirmed %v before tx 1 was acknowledged", got)
	}
	tr.Ack(b)
	if got := tr.Confirmed(); got != 0 {
		t.Fatalf("confirmed %v with message a unacknowledged", got)
	}
	tr.Ack(a)
	if got := tr.Confirmed(); got != 200 {
		t.Fatalf("confirmed %v, want 200", got)
	}
	if tr.InFlight() != 0 {
		t.Fatalf("in flight %d", tr.InFlight())
	}
}

func TestTrackerIdleAdvanceAndEmptyCommits(t *testing.T) {
	tr := NewTracker(2)
	if !tr.AdvanceIdle(50) || tr.Confirmed() != 50 {
		t.Fatal("idle tracker did not advance")
	}
	s := tr.Add()
	if tr.AdvanceIdle(60) {
		t.Fatal("advanced while a message is in flight")
	}
	tr.Commit(70)
	for i := range 1000 { // empty transactions must not queue up
		tr.Commit(pglogrepl.LSN(80 + i))
	}
	if len(tr.marks) != 1 {
		t.Fatalf("%d commit marks queued, want 1", len(tr.marks))
	}
	tr.Ack(s)
	if got := tr.Confirmed(); got != 1079 {
		t.Fatalf("confirmed %v, want 1079", got)
	}
}

func TestTrackerFullAndRandomAckOrder(t *testing.T) {
	const capacity = 64
	tr := NewTracker(capacity)
	rng := rand.New(rand.NewPCG(1, 2))
	var pending []uint64
	var lastCommit pglogrepl.LSN
	lsn := pglogrepl.LSN(1)
	for round := 0; round < 2000; round++ {
		if !tr.Full() && rng.IntN(3) > 0 {
			pending = append(pending, tr.Add())
			if rng.IntN(4) == 0 {
				lsn += 10
				tr.Commit(lsn)
				lastCommit = lsn
			}
			continue
		}
		if len(pending) == 0 {
			continue
		}
		i := rng.IntN(len(pending))
		tr.Ack(pending[i])
		pending = append(pending[:i], pending[i+1:]...)
		if c := tr.Confirmed(); c > lastCommit {
			t.Fatalf("confirmed %v beyond last commit %v", c, lastCommit)
		}
	}
	for _, s := range pending {
		tr.Ack(s)
	}
	if tr.Confirmed() != lastCommit {
		t.Fatalf("after all acks confirmed %v, want %v", tr.Confirmed(), lastCommit)
	}
	if tr.Full() {
		t.Fatal("full after all acks")
	}
}

func TestTrackerAckedGrowsInsideATransaction(t *testing.T) {
	tr := NewTracker(4)
	a, b := tr.Add(), tr.Add()
	tr.Ack(b)
	if tr.Acked() != 0 {
		t.Fatalf("acked %d with the first message outstanding", tr.Acked())
	}
	tr.Ack(a)
	if tr.Acked() != 2 || tr.Confirmed() != 0 {
		t.Fatalf("acked %d confirmed %v, want 2 and nothing confirmed before the commit", tr.Acked(), tr.Confirmed())
	}
}

// A late acknowledgement from before a Reset (the previous session's
// producer still flushing) must not count for a message of the new session.
func TestTrackerIgnoresAcksFromBeforeReset(t *testing.T) {
	tr := NewTracker(8)
	old := tr.Add()
	tr.Reset(100)
	fresh := tr.Add()
	tr.Commit(200)
	tr.Ack(old)
	if got := tr.Confirmed(); got != 100 {
		t.Fatalf("confirmed %v after a stale ack, want 100", got)
	}
	tr.Ack(fresh)
	if got := tr.Confirmed(); got != 200 {
		t.Fatalf("confirmed %v, want 200", got)
	}
	if tr.Full() || tr.InFlight() != 0 {
		t.Fatalf("in flight %d after all acks", tr.InFlight())
	}
}

// After a failover to a lagging replica or a recreated slot the server's
// confirmed position is below the tracker's: Reset must take the server's
// value, or capture would confirm positions Kafka never acknowledged in
// this session (issue 10 item 5).
func TestTrackerResetTakesServerValue(t *testing.T) {
	tr := NewTracker(4)
	tr.Add()
	tr.Commit(500)
	tr.Ack(0)
	if got := tr.Confirmed(); got != 500 {
		t.Fatalf("confirmed %v before reset, want 500", got)
	}
	tr.Reset(200) // the new session's slot is confirmed only up to 200
	if got := tr.Confirmed(); got != 200 {
		t.Fatalf("confirmed %v after Reset(200), want the server's 200", got)
	}
	// The idle path must not jump back above the server either.
	if tr.AdvanceIdle(150) {
		t.Fatal("AdvanceIdle moved below the reset position")
	}
}

// TestTrackerBoundsBytes: the tracker is full once the bytes in flight
// reach the limit, an out-of-order acknowledgement frees its bytes at
// once, duplicates free nothing, and Reset forgets them.
func TestTrackerBoundsBytes(t *testing.T) {
	tr := NewTracker(100)
	tr.LimitBytes(1000)
	a := tr.AddSized(600)
	if tr.Full() {
		t.Fatal("full at 600 of 1000 bytes")
	}
	b := tr.AddSized(600) // one message may cross the limit
	if !tr.Full() || tr.InFlightBytes() != 1200 {
		t.Fatalf("full=%v with %d bytes in flight, want full at 1200", tr.Full(), tr.InFlightBytes())
	}
	tr.Ack(b) // out of order: a still holds the prefix, but b's bytes are gone
	tr.Ack(b)
	if tr.Full() || tr.InFlightBytes() != 600 {
		t.Fatalf("full=%v with %d bytes after acknowledging b (twice), want 600", tr.Full(), tr.InFlightBytes())
	}
	tr.AddSized(5000) // larger than the limit on its own: still accepted when not full
	tr.Reset(0)
	tr.Ack(a) // late, from before the reset
	if tr.Full() || tr.InFlightBytes() != 0 {
		t.Fatalf("full=%v with %d bytes after Reset", tr.Full(), tr.InFlightBytes())
	}
}

// TestTrackerHoldsUntilReleased: under exactly-once delivery an
// acknowledged transaction is confirmable only once the Kafka transaction
// holding it committed (Release); an idle tracker releases what it
// acknowledged only when told nothing is open (ReleaseIdle).
func TestTrackerHoldsUntilReleased(t *testing.T) {
	tr := NewTracker(8)
	tr.HoldUntilReleased()
	tr.Reset(100)
	a := tr.Add()
	tr.Commit(200)
	tr.Ack(a)
	if got := tr.Confirmed(); got != 100 {
		t.Fatalf("confirmed %v before the Kafka commit, want 100", got)
	}
	tr.Release(200)
	if got := tr.Confirmed(); got != 200 {
		t.Fatalf("confirmed %v after the commit, want 200", got)
	}
	tr.Release(150) // never backwards
	if got := tr.Confirmed(); got != 200 {
		t.Fatalf("confirmed %v after an older release, want 200", got)
	}
	if !tr.AdvanceIdle(300) || tr.Confirmed() != 200 {
		t.Fatalf("idle advance confirmed %v without a release, want 200", tr.Confirmed())
	}
	b := tr.Add()
	if tr.ReleaseIdle() {
		t.Fatal("released with a message in flight")
	}
	tr.Ack(b)
	if !tr.ReleaseIdle() || tr.Confirmed() != 300 {
		t.Fatalf("idle release: confirmed %v, want 300", tr.Confirmed())
	}
	tr.Release(1000) // past the acknowledged LSN: acknowledgement still caps
	if got := tr.Confirmed(); got != 300 {
		t.Fatalf("confirmed %v, past what was acknowledged (300)", got)
	}
}

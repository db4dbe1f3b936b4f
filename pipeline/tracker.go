package pipeline

import (
	"sync"

	"github.com/jackc/pglogrepl"
)

// Tracker follows produced messages until the broker acknowledges them and
// says which LSN is safe to confirm to Postgres: the commit LSN of the newest
// transaction whose messages, and every message before them, were
// acknowledged. Acknowledgements may arrive in any order (different
// partitions, retries); only the contiguous acknowledged prefix counts.
//
// The reader calls Add for each message and Commit at each transaction end;
// the producer's acknowledgement loop calls Ack. Capacity bounds the messages
// in flight, and LimitBytes their total size: the reader must wait (Full,
// Changed) before adding more, which is how a slow broker pushes back on the
// replication stream.
type Tracker struct {
	mu        sync.Mutex
	acked     []bool // ring indexed by seq % len
	sizes     []int  // ring like acked: bytes of each unacknowledged message
	bytes     int64  // sum of sizes: bytes in flight
	maxBytes  int64  // 0: no byte limit
	head      uint64 // lowest unacknowledged sequence number
	next      uint64 // sequence number the next Add returns
	marks     []commitMark
	confirmed pglogrepl.LSN
	// hold (exactly-once delivery) caps Confirmed at released: an
	// acknowledged message is not yet visible to read_committed
	// consumers, only a committed Kafka transaction is.
	hold     bool
	released pglogrepl.LSN
	changed  chan struct{}
}

type commitMark struct {
	end uint64 // messages with seq < end belong to this commit or earlier
	lsn pglogrepl.LSN
}

// NewTracker returns a tracker allowing capacity messages in flight.
func NewTracker(capacity int) *Tracker {
	if capacity < 1 {
		capacity = 1
	}
	return &Tracker{acked: make([]bool, capacity), sizes: make([]int, capacity), changed: make(chan struct{}, 1)}
}

// LimitBytes bounds the bytes in flight (0: no bound). The tracker is full
// once they reach max; a message is only refused when the tracker is
// already full, so in-flight bytes stay below max plus one message, and a
// single message larger than max still goes through. Call before use.
func (t *Tracker) LimitBytes(max int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.maxBytes = max
}

// Add registers a message about to be produced and returns its sequence
// number. It panics when the tracker is full: callers check Full first.
func (t *Tracker) Add() uint64 { return t.AddSized(0) }

// AddSized is Add for a message of size bytes, counted against LimitBytes
// until it is acknowledged.
func (t *Tracker) AddSized(size int) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fullLocked() {
		panic("pipeline: Tracker.Add on a full tracker")
	}
	seq := t.next
	t.next++
	t.sizes[seq%uint64(len(t.sizes))] = size
	t.bytes += int64(size)
	return seq
}

// Full reports whether no more messages may be added until some are acked.
func (t *Tracker) Full() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.fullLocked()
}

func (t *Tracker) fullLocked() bool {
	return t.next-t.head >= uint64(len(t.acked)) || (t.maxBytes > 0 && t.bytes >= t.maxBytes)
}

// InFlightBytes returns the bytes of the messages added and not yet
// acknowledged (an acknowledged message counts no more even while one
// before it waits: the producer no longer holds it).
func (t *Tracker) InFlightBytes() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.bytes
}

// InFlight returns the number of messages added but not yet in the
// acknowledged prefix.
func (t *Tracker) InFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return int(t.next - t.head)
}

// Commit records that every message added so far belongs to transactions
// that end at lsn. Once they are all acknowledged, lsn becomes confirmable.
func (t *Tracker) Commit(lsn pglogrepl.LSN) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(t.marks); n > 0 && t.marks[n-1].end == t.next {
		// Nothing was added since the previous commit: coalesce, so empty
		// transactions cannot grow the queue.
		if lsn > t.marks[n-1].lsn {
			t.marks[n-1].lsn = lsn
		}
	} else {
		t.marks = append(t.marks, commitMark{end: t.next, lsn: lsn})
	}
	t.advanceLocked()
}

// Ack records the broker's acknowledgement of message seq.
func (t *Tracker) Ack(seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if seq < t.head || seq >= t.next {
		return // duplicate or unknown: nothing to do
	}
	i := seq % uint64(len(t.acked))
	if t.acked[i] {
		return // duplicate
	}
	t.acked[i] = true
	t.bytes -= int64(t.sizes[i])
	t.sizes[i] = 0
	for t.head < t.next {
		i := t.head % uint64(len(t.acked))
		if !t.acked[i] {
			break
		}
		t.acked[i] = false
		t.head++
	}
	t.advanceLocked()
}

// AdvanceIdle moves the confirmable LSN to lsn when nothing is in flight and
// no commit is pending, which is how an idle slot follows the server's WAL
// end. It reports whether it advanced.
func (t *Tracker) AdvanceIdle(lsn pglogrepl.LSN) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.head != t.next || len(t.marks) > 0 || lsn <= t.confirmed {
		return false
	}
	t.confirmed = lsn
	return true
}

// Acked returns how many messages form the acknowledged prefix (counted
// across resets); it grows whenever acknowledgements make progress, even inside
// a transaction too large to have committed yet.
func (t *Tracker) Acked() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.head
}

// Confirmed returns the highest LSN that is safe to confirm to Postgres.
// With HoldUntilReleased it is at most the released LSN.
func (t *Tracker) Confirmed() pglogrepl.LSN {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.hold && t.released < t.confirmed {
		return t.released
	}
	return t.confirmed
}

// HoldUntilReleased makes acknowledgement necessary but not sufficient:
// Confirmed stays at or below the LSN last given to Release (or Reset).
// Exactly-once delivery releases an LSN once the Kafka transaction that
// holds its messages committed. Call before use.
func (t *Tracker) HoldUntilReleased() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.hold = true
}

// Release records that everything up to lsn is committed on Kafka.
func (t *Tracker) Release(lsn pglogrepl.LSN) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if lsn > t.released {
		t.released = lsn
		t.signalLocked()
	}
}

// ReleaseIdle releases the acknowledged LSN when nothing is in flight and
// no commit is pending: the caller knows that no Kafka transaction is open,
// so everything acknowledged is committed. It reports whether it moved.
func (t *Tracker) ReleaseIdle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.head != t.next || len(t.marks) > 0 || t.confirmed <= t.released {
		return false
	}
	t.released = t.confirmed
	return true
}

// Reset forgets everything in flight and restarts from confirmed, for a new
// replication session after an error. confirmed is the server's value and
// is taken as it is, even below the old one: after a failover to a lagging
// replica or a recreated slot, keeping the old maximum would confirm
// positions Kafka never acknowledged in the new session. Sequence numbers keep growing across
// a reset: a late acknowledgement from the previous session's producer
// falls below head and is ignored, instead of acknowledging a new message
// that happens to reuse its number.
func (t *Tracker) Reset(confirmed pglogrepl.LSN) {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.acked)
	clear(t.sizes)
	t.bytes = 0
	t.head = t.next
	t.marks = t.marks[:0]
	t.confirmed = confirmed
	t.released = confirmed // the server's confirmed LSN was committed before it was confirmed
}

// Changed is signalled (without blocking, coalesced) whenever messages are
// acknowledged, so a waiting reader can re-check Full or the confirmed LSN.
func (t *Tracker) Changed() <-chan struct{} { return t.changed }

func (t *Tracker) advanceLocked() {
	n := 0
	for n < len(t.marks) && t.marks[n].end <= t.head {
		if t.marks[n].lsn > t.confirmed {
			t.confirmed = t.marks[n].lsn
		}
		n++
	}
	if n > 0 {
		t.marks = append(t.marks[:0], t.marks[n:]...)
	}
	t.signalLocked()
}

func (t *Tracker) signalLocked() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

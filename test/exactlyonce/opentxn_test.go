package exactlyonce

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// TestOpenKafkaTransactionOfKilledCaptureIsAborted (issue 12): capture is
// SIGKILLed while it streams one 20,000-row Postgres transaction (the
// broker is slowed down so that it is caught in the middle), leaving its
// Kafka transaction open. While capture is down a read_committed reader
// sees none of it; the restarted capture aborts it (its records never
// become visible to read_committed readers; a read_uncommitted reader may
// see them) and then commits the transaction exactly once; samples of
// consistent cuts meanwhile see none or all of it.
func TestOpenKafkaTransactionOfKilledCaptureIsAborted(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	kafka := ownKafka(t) // slowed down below
	// Small produce batches, each held by the broker: the transaction
	// streams for seconds.
	s := newSetup(t, e.PG, kafka, "CDCSYNC_KAFKA_BATCH_MESSAGES=500")
	const rows = 20_000
	proc := s.capture()
	s.waitStreaming(0)
	// Capture starts (topics, checkpoint) before the broker slows down.
	waitFor(t, 30*time.Second, "the topics", func() bool {
		r := newReader(kafka.Brokers(), sarama.ReadCommitted)
		defer r.Close()
		_, err := r.cut(s.topics)
		return err == nil
	})

	var slow atomic.Bool
	slow.Store(true)
	cluster := kafka.Cluster()
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if slow.Load() {
			time.Sleep(150 * time.Millisecond) // holds the whole broker, like a stalled disk
		}
		return nil, nil, false
	})
	t.Cleanup(func() { slow.Store(false) })

	l := &ledger{}
	w := newWriter(t, s, 0, l)
	w.big = rows
	if err := w.bigTxn(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Caught in the middle: some of it written, not all.
	waitFor(t, 2*time.Minute, "part of the transaction on the topics", func() bool {
		return s.topicEnd(sarama.ReadUncommitted) >= rows/5
	})
	if err := proc.Kill(); err != nil {
		t.Fatal(err)
	}
	slow.Store(false)
	hw, lso := s.topicEnd(sarama.ReadUncommitted), s.topicEnd(sarama.ReadCommitted)
	t.Logf("capture SIGKILLed with %d records on the topics, %d below the last stable offsets", hw, lso)
	if delivery() == "exactly-once" && lso >= hw {
		t.Fatalf("no Kafka transaction was open at the kill (%d records, all committed): the test proves nothing; slow the broker down more", hw)
	}
	time.Sleep(time.Second)
	if seen := len(s.readCommitted()); seen != 0 {
		t.Errorf("while capture was down a read_committed reader saw %d records of the %d-row transaction", seen, rows+1)
	}

	smp := newSampler(kafka.Brokers(), s.topics)
	stopSampler := smp.run(100 * time.Millisecond)
	defer stopSampler()
	proc = s.capture()
	s.waitConfirmed(3 * time.Minute)
	time.Sleep(300 * time.Millisecond)
	stopSampler()
	stop(t, proc)

	recs := s.readCommitted()
	x := checkExact(t, s, recs, l)
	partial := smp.partial(t, groups(recs))
	uncommitted := s.read(sarama.ReadUncommitted)
	t.Logf("delivery %s: read_committed: %v", delivery(), x)
	t.Logf("read_uncommitted: %d records (%d beyond the committed ones: the aborted copy)", len(uncommitted), len(uncommitted)-len(recs))
	t.Logf("atomicity: %v; %d transactions seen partly", smp, partial)
	if !x.exact() || partial > 0 {
		t.Fatalf("the killed capture's records became visible: %v; %d transactions seen partly", x, partial)
	}
}

package capture

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// TestTxnDueCommitsLiveWritesSoon: a Kafka transaction holding a few live
// writes commits after txnLiveAge, so that read-your-writes waits are not
// held for txnMaxAge; one filling up with a backlog still runs to
// txnMaxAge or its record bound, so that commits stay rare in bulk.
func TestTxnDueCommitsLiveWritesSoon(t *testing.T) {
	began := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		records int
		age     time.Duration
		want    bool
	}{
		{"live writes, young", 20, txnLiveAge / 2, false},
		{"live writes at the live age", 20, txnLiveAge, true},
		{"backlog at the live age", txnBulkRecords, txnLiveAge, false},
		{"backlog just short of the max age", 5000, txnMaxAge - time.Millisecond, false},
		{"backlog at the max age", 5000, txnMaxAge, true},
		{"full", 20000, time.Millisecond, true},
	}
	for _, c := range cases {
		tx := &txn{maxRecs: 20000, open: true, began: began, records: c.records}
		if got := tx.due(began.Add(c.age)); got != c.want {
			t.Errorf("%s (%d records, %v old): due = %v, want %v", c.name, c.records, c.age, got, c.want)
		}
	}
	if (&txn{maxRecs: 1, records: 5, began: began}).due(began.Add(time.Hour)) {
		t.Error("no transaction open: due says commit")
	}
}

// stalledTxnProducer is sarama's transactional producer as it is once a
// produce inside the transaction failed: the state is abortable, and the
// commit waits for batches sarama retries (for the produce retry window).
type stalledTxnProducer struct {
	sarama.AsyncProducer
	input   chan *sarama.ProducerMessage
	release chan struct{}
	status  atomic.Int32
}

func (p *stalledTxnProducer) Input() chan<- *sarama.ProducerMessage { return p.input }
func (p *stalledTxnProducer) CommitTxn() error {
	<-p.release
	return sarama.ErrOutOfOrderSequenceNumber
}
func (p *stalledTxnProducer) TxnStatus() sarama.ProducerTxnStatusFlag {
	return sarama.ProducerTxnStatusFlag(p.status.Load())
}

// TestCommitEndsWhenTheTransactionIsAbortable: a commit of a transaction
// sarama moved to its abortable state returns errTxnAbortable at once
// (not ErrFenced: nothing fenced it) instead of waiting out sarama's
// retries with the stream stalled; the session then ends and the next
// producer aborts it. Before, the commit waited until its context ended.
func TestCommitEndsWhenTheTransactionIsAbortable(t *testing.T) {
	ap := &stalledTxnProducer{input: make(chan *sarama.ProducerMessage, 1), release: make(chan struct{})}
	defer close(ap.release)
	ap.status.Store(int32(sarama.ProducerTxnFlagInTransaction))
	tx := &txn{ap: ap, topic: "cdc.capture.checkpoint", maxRecs: 10, open: true, began: time.Now(), records: 3}
	tx.pending.Slot = "cdcsync"
	go func() {
		time.Sleep(100 * time.Millisecond)
		ap.status.Store(int32(sarama.ProducerTxnFlagInError | sarama.ProducerTxnFlagAbortableError))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err := tx.commit(ctx, func(context.Context) error { return nil }, 20*time.Millisecond)
	if !errors.Is(err, errTxnAbortable) || errors.Is(err, ErrFenced) {
		t.Fatalf("commit of an abortable transaction after %v: %v, want errTxnAbortable and not ErrFenced", time.Since(start).Round(time.Millisecond), err)
	}
	t.Logf("commit gave up after %v: %v", time.Since(start).Round(time.Millisecond), err)
}

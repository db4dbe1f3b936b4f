package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

// Exactly-once delivery (CDCSYNC_DELIVERY=exactly-once): the session's
// producer is transactional. Everything the stream produces goes into a
// Kafka transaction, whole Postgres transactions at a time, and each Kafka
// transaction ends with capture's checkpoint (checkpoint.go). The stream
// commits at a Postgres commit boundary once the transaction holds
// txnMaxRecords messages or is txnMaxAge old, and when the source goes
// quiet (txnIdleGap) with a transaction open. An LSN is confirmed to
// Postgres only once the transaction holding it committed (the tracker
// holds it until Release).
//
// The transactional.id is derived from the slot, so the producer of a
// capture that takes the slot over fences the previous one: its
// InitProducerID bumps the epoch and aborts what the old one left open, and
// the old producer's next request fails. That failure ends the old
// session (ErrFenced) and it never writes again with that producer.

// Delivery modes (CDCSYNC_DELIVERY).
const (
	deliveryAtLeastOnce = "at-least-once"
	deliveryExactlyOnce = "exactly-once"
)

const (
	// txnMaxAge: a Kafka transaction commits at the first Postgres
	// commit after it is this old. Commits wait for every message of the
	// transaction (the stream stops reading meanwhile: about a linger
	// plus a coordinator round trip), so while working through a backlog
	// fewer, larger ones keep the pipeline full.
	txnMaxAge = 100 * time.Millisecond
	// txnLiveAge: a transaction that holds fewer than txnBulkRecords
	// messages commits once it is this old. Few messages in that time
	// means the stream is following live writes, not a backlog, and a
	// commit is what makes them visible (and read-your-writes tokens
	// reached): at 2,000 writes a second, committing at txnMaxAge put
	// read-your-writes p99 at 100-188 ms against 62-79 ms at least once;
	// at this age it is within a few ms of at least once (README). A
	// backlog fills txnBulkRecords well within this age (capture reads
	// 150,000+ rows a second), so bulk throughput is unchanged.
	txnLiveAge     = 10 * time.Millisecond
	txnBulkRecords = 500
	// txnIdleGap: a transaction open between Postgres transactions with
	// nothing arriving for this long commits (the source went quiet).
	txnIdleGap = 5 * time.Millisecond
	// defaultTransactionTimeout is used when the configuration has none
	// (CDCSYNC_KAFKA_TRANSACTION_TIMEOUT; Kafka's transaction.max.timeout.ms
	// default).
	defaultTransactionTimeout = 15 * time.Minute
)

// ErrFenced means a newer producer with the same transactional.id (a
// capture that took the slot over) fenced this session's producer: the
// session ends and writes nothing more.
var ErrFenced = errors.New("fenced by a newer capture of the slot (same transactional.id)")

// transactionalID is the transactional.id of a slot's capture: the slot
// and the topic prefix, so that captures of different order databases
// whose slots have the same name (the default, "cdcsync") do not fence each
// other on a shared Kafka cluster; they must have their own prefixes anyway,
// or their topics collide. A slot name has no dot: the last one separates.
func transactionalID(prefix, slot string) string { return "cdcsync-capture-" + prefix + "." + slot }

// exactlyOnce configures sc for a transactional producer of cfg's slot.
func exactlyOnce(sc *sarama.Config, cfg config.Capture) {
	sc.Producer.Transaction.ID = transactionalID(cfg.TopicPrefix, cfg.Slot)
	sc.Producer.Transaction.Timeout = defaultTransactionTimeout
	if cfg.TransactionTimeout > 0 {
		sc.Producer.Transaction.Timeout = cfg.TransactionTimeout
	}
	// Coordinator requests (AddPartitionsToTxn, EndTxn) retry through a
	// broker restart, as produce requests do.
	sc.Producer.Transaction.Retry.Max = 60
	sc.Producer.Transaction.Retry.BackoffFunc = func(retries, maxRetries int) time.Duration {
		return min(retryBackoff(retries, maxRetries), time.Second)
	}
}

// fenced marks err as ErrFenced when the broker says a newer producer
// with the same transactional.id exists.
func fenced(err error) error {
	if err == nil || errors.Is(err, ErrFenced) {
		return err
	}
	// kfake answers a fenced producer's produce with INVALID_TXN_STATE
	// where Kafka says PRODUCER_FENCED or INVALID_PRODUCER_EPOCH; either
	// way this producer's transaction cannot go on.
	if errors.Is(err, sarama.ErrProducerFenced) || errors.Is(err, sarama.ErrInvalidProducerEpoch) || errors.Is(err, sarama.ErrInvalidTxnState) {
		return fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return err
}

// fatal returns ErrFenced once sarama moved the transaction to its fatal
// state. The fencing error itself does not always come back: a batch whose
// AddPartitionsToTxn was refused is retried like a connection failure
// (for CDCSYNC's ten minutes of produce retries) with the error kept
// inside the producer. A fatal state other than fencing (an authorization
// error) needs a new producer just the same.
//
// It also returns errTxnAbortable once sarama moved the transaction to its
// abortable state (a produce inside it failed): that transaction can no
// longer commit, but sarama goes on retrying its remaining batches like a
// connection failure, and a commit waiting for them would wait those ten
// minutes with the stream stalled. Ending the session instead lets the next
// one's producer abort the transaction and send its changes again.
func (t *txn) fatal() error {
	st := t.ap.TxnStatus()
	switch {
	case st&sarama.ProducerTxnFlagFatalError != 0:
		return fmt.Errorf("%w: the transactional producer's state is fatal (%s)", ErrFenced, st)
	case st&sarama.ProducerTxnFlagAbortableError != 0:
		// The failed produce says why (a poison record the broker
		// refused is stopped on, not retried).
		var why error
		if t.deliveryErr != nil {
			why = t.deliveryErr()
		}
		return errors.Join(why, fmt.Errorf("%w (%s)", errTxnAbortable, st))
	}
	return nil
}

// errTxnAbortable: the open Kafka transaction failed and can only be
// aborted; the session ends and the next one sends its changes again.
var errTxnAbortable = errors.New("the kafka transaction failed and can only be aborted")

// fatalPoll is how often a waiting commit looks at the transaction state.
const fatalPoll = 50 * time.Millisecond

// checkpointMeta marks the checkpoint record: its acknowledgement concerns
// no tracked change.
type checkpointMeta struct{}

// txn is the transaction state of an exactly-once session's producer. It
// is used by the stream goroutine only.
type txn struct {
	ap      sarama.AsyncProducer
	log     *slog.Logger
	metrics *metrics
	tracker *pipeline.Tracker
	topic   string // the checkpoint topic
	maxRecs int

	open    bool
	began   time.Time
	records int // messages in the open transaction
	// pending is what the open transaction's checkpoint says; committed
	// the last committed one.
	pending, committed pipeline.Checkpoint
	// commitDone is set while a CommitTxn runs on its goroutine.
	commitDone chan error
	// deliveryErr returns the producer's first delivery failure (nil:
	// none, or not wired).
	deliveryErr func() error
}

func newTxn(ap sarama.AsyncProducer, cfg config.Capture, log *slog.Logger, m *metrics, tr *pipeline.Tracker) *txn {
	return &txn{
		ap: ap, log: log, metrics: m, tracker: tr, topic: pipeline.CheckpointTopic(cfg.TopicPrefix),
		maxRecs:   max(cfg.MaxInFlight, 1),
		pending:   pipeline.Checkpoint{Slot: cfg.Slot},
		committed: pipeline.Checkpoint{Slot: cfg.Slot},
	}
}

// resume starts from the checkpoint read at start-up.
func (t *txn) resume(c pipeline.Checkpoint) {
	t.pending, t.committed = c, c
}

// begin opens a transaction unless one is open.
func (t *txn) begin() error {
	if t.open {
		t.records++
		return nil
	}
	if err := t.ap.BeginTxn(); err != nil {
		return errors.Join(t.fatal(), fenced(fmt.Errorf("begin kafka transaction: %w", err)))
	}
	t.open, t.began, t.records = true, time.Now(), 1
	return nil
}

// reached records that the stream passed the end of a unit (a Postgres
// transaction or a non-transactional message) at lsn: the next checkpoint
// covers it.
func (t *txn) reached(epoch uint32, lsn pglogrepl.LSN) {
	if lsn > t.pending.LSN || epoch != t.pending.Epoch {
		t.pending.Epoch, t.pending.LSN = epoch, lsn
	}
}

// maxCheckpointBackfills bounds the backfills a checkpoint remembers: the
// most recent ones (backfills run in id order; older ones are done).
const maxCheckpointBackfills = 64

// markBackfill records that the open transaction holds backfill id's rows
// up to m: the checkpoint carries it.
func (t *txn) markBackfill(id int64, m pipeline.BackfillMark) {
	marks := maps.Clone(t.pending.Backfills) // committed shares the old map
	if marks == nil {
		marks = map[int64]pipeline.BackfillMark{}
	}
	marks[id] = m
	for len(marks) > maxCheckpointBackfills {
		delete(marks, slices.Min(slices.Collect(maps.Keys(marks))))
	}
	t.pending.Backfills = marks
}

// due reports whether the open transaction should commit now, at a
// Postgres commit boundary: it is full, or old (txnMaxAge), or holds live
// writes worth showing (txnLiveAge).
func (t *txn) due(now time.Time) bool {
	if !t.open {
		return false
	}
	age := now.Sub(t.began)
	return t.records >= t.maxRecs || age >= txnMaxAge || (age >= txnLiveAge && t.records < txnBulkRecords)
}

// commit writes the checkpoint into the open transaction and commits it.
// While the producer flushes and the coordinator commits, keepAlive runs
// every interval so the stream keeps answering Postgres.
func (t *txn) commit(ctx context.Context, keepAlive func(context.Context) error, interval time.Duration) error {
	if !t.open {
		return nil
	}
	value, err := t.pending.Encode()
	if err != nil {
		return err
	}
	msg := &sarama.ProducerMessage{Topic: t.topic, Key: sarama.StringEncoder(t.pending.Slot), Value: sarama.ByteEncoder(value), Metadata: &checkpointMeta{}}
	if err := t.input(ctx, msg, keepAlive, interval); err != nil {
		return err
	}
	done := make(chan error, 1)
	t.commitDone = done
	go func() { done <- t.ap.CommitTxn() }()
	tick := time.NewTicker(fatalPoll)
	defer tick.Stop()
	nextKeepAlive := time.Now().Add(interval)
	for {
		select {
		case err := <-done:
			return t.finish(err)
		case now := <-tick.C:
			if err := t.fatal(); err != nil {
				return err // the commit cannot succeed; close abandons it
			}
			if now.After(nextKeepAlive) {
				nextKeepAlive = now.Add(interval)
				if err := keepAlive(ctx); err != nil {
					return err
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// input hands msg to the producer, answering Postgres every interval while
// the producer's buffers are full (a stalled broker).
func (t *txn) input(ctx context.Context, msg *sarama.ProducerMessage, keepAlive func(context.Context) error, interval time.Duration) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case t.ap.Input() <- msg:
			return nil
		case <-tick.C:
			if err := t.fatal(); err != nil {
				return err
			}
			if err := keepAlive(ctx); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// finish records the result of a commit.
func (t *txn) finish(err error) error {
	t.commitDone = nil
	t.open = false
	if err != nil {
		t.metrics.kafkaTxns.WithLabelValues("failed").Inc()
		err = fmt.Errorf("commit kafka transaction: %w", err)
		// A fenced producer's commit may fail with "transaction is not
		// ready" rather than the fencing error: the refused produce says
		// why (or the fatal state).
		var delivery error
		if t.deliveryErr != nil {
			delivery = fenced(t.deliveryErr())
		}
		return errors.Join(t.fatal(), fenced(err), delivery)
	}
	t.committed = t.pending
	t.metrics.kafkaTxns.WithLabelValues("committed").Inc()
	t.metrics.checkpointLSN.Set(float64(t.committed.LSN))
	t.tracker.Release(t.committed.LSN)
	return nil
}

// waitCommit waits up to d for a commit still running on its goroutine
// (the stream ended meanwhile), so the producer is not closed under it;
// false when it still runs (the producer's close ends it).
func (t *txn) waitCommit(d time.Duration) bool {
	if t.commitDone == nil {
		return true
	}
	select {
	case err := <-t.commitDone:
		if err := t.finish(err); err != nil {
			t.log.Warn("the last Kafka transaction did not commit; the next session sends its changes again", "err", err)
		}
		return true
	case <-time.After(d):
		t.commitDone = nil
		return false
	}
}

// endTxn ends the open Kafka transaction on a clean stop, by until:
// committed when the stream stopped between Postgres transactions, aborted
// inside one. A commit or abort the broker does not answer in time is left
// running; the producer's close ends it (and the broker, or the next
// producer's initialisation, aborts the transaction).
func (c *capturer) endTxn(st *stream, prod *producer, until time.Time) error {
	t := prod.txn
	if t == nil {
		return nil
	}
	if !t.waitCommit(time.Until(until)) {
		// Another commit would only queue behind it (sarama's
		// transaction lock).
		return errors.New("the last kafka transaction's commit did not finish before the shutdown timeout; the next session sends its changes again")
	}
	if !t.open {
		return nil
	}
	if st.inTx {
		return t.abortBy(until)
	}
	ctx, cancel := context.WithDeadline(context.Background(), until)
	defer cancel()
	return st.commitTxn(ctx)
}

// abortBy aborts the open transaction (a stop inside a Postgres
// transaction: half of it must not become visible), giving up at until:
// sarama's abort waits for the transaction's messages first, which a
// stalled broker never acknowledges. A failure leaves it to the next
// producer's initialisation, or the transaction timeout, to abort.
func (t *txn) abortBy(until time.Time) error {
	if !t.open {
		return nil
	}
	t.open = false
	done := make(chan error, 1)
	go func() { done <- t.ap.AbortTxn() }()
	select {
	case err := <-done:
		if err != nil {
			return fenced(fmt.Errorf("abort kafka transaction: %w", err))
		}
		t.metrics.kafkaTxns.WithLabelValues("aborted").Inc()
		return nil
	case <-time.After(time.Until(until)):
		return errors.New("abort kafka transaction: the broker did not answer before the shutdown timeout; it aborts the transaction itself")
	}
}

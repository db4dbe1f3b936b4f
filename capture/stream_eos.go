package capture

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pglogrepl"
)

// The stream's side of exactly-once delivery (txproducer.go): where Kafka
// transactions commit, and what a restarted session drops.

// unitDone is called at the end of a unit of the stream (a Postgres
// transaction's commit, a non-transactional logical message) at lsn: the
// next checkpoint covers it, and a transaction that is due commits here,
// at a boundary, never inside a Postgres transaction.
func (s *stream) unitDone(ctx context.Context, lsn pglogrepl.LSN) error {
	if s.skipping {
		s.skipping = false
		s.metrics.droppedOnResume.Inc()
	}
	s.txn.reached(s.decoder.src.Epoch, lsn)
	if !s.txn.due(time.Now()) {
		return nil
	}
	return s.commitTxn(ctx)
}

// commitTxn commits the open Kafka transaction with the checkpoint of the
// last unit in it, and the watermarks that checkpoint allows.
func (s *stream) commitTxn(ctx context.Context) error {
	if s.wm != nil {
		if asOf, ok := s.wm.prepare(s.txn.pending.LSN); ok && !s.wm.emit(ctx, s.txn.pending.LSN, asOf) && ctx.Err() != nil {
			return ctx.Err() // otherwise the producer was full: the next commit writes one
		}
	}
	if err := s.txn.commit(ctx, s.keepAlive, s.interval); err != nil {
		// A message that failed for good (a poison record the broker
		// refused) says more than the failed commit.
		return errors.Join(s.prod.deliveryErr(), err)
	}
	return nil
}

// releaseIdle: with no Kafka transaction open and nothing in flight,
// everything acknowledged is committed, so an idle slot follows the
// server's WAL end as it does at least once.
func (s *stream) releaseIdle() {
	if s.txn != nil && !s.txn.open {
		s.tracker.ReleaseIdle()
	}
}

// idleDeadline returns when a receive should give up to commit the open
// transaction because the source went quiet, or false when no commit is
// waiting (no transaction open, or inside a Postgres transaction).
func (s *stream) idleDeadline() (time.Time, bool) {
	if s.txn == nil || !s.txn.open || s.inTx {
		return time.Time{}, false
	}
	d := time.Now().Add(txnIdleGap)
	if d.After(s.nextStatus) {
		d = s.nextStatus
	}
	return d, true
}

// idleWatermark writes a watermark in a transaction of its own when one is
// due while the stream is idle (the source's time moved, or the slot
// followed the server's WAL end): at least once's watermarker does this
// from its own loop.
func (s *stream) idleWatermark(ctx context.Context) error {
	if s.wm == nil || s.inTx || s.txn.open {
		return nil
	}
	lsn := s.tracker.Confirmed()
	asOf, ok := s.wm.prepare(lsn)
	if !ok {
		return nil
	}
	if err := s.txn.begin(); err != nil {
		return err
	}
	if !s.wm.emit(ctx, lsn, asOf) && ctx.Err() != nil {
		return ctx.Err()
	}
	return s.commitTxn(ctx)
}

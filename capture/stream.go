package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/pipeline"
)

// heartbeatPrefix marks the logical messages capture writes so that an idle
// slot has something to confirm.
const heartbeatPrefix = "cdcsync.heartbeat"

// stream reads one replication session and produces what it decodes. It
// owns the replication connection: reading, status updates and the final
// confirmation all happen on the goroutine that calls run.
type stream struct {
	log     *slog.Logger
	conn    *pgconn.PgConn
	decoder *Decoder
	route   func(Change) (Record, bool, error)
	message func(*pglogrepl.LogicalDecodingMessage, pipeline.Position) (Record, bool, error)
	// types is the decoder's registry; loadTypes refreshes it from the
	// catalog when the stream names a type created after start-up.
	types     *Types
	loadTypes func(context.Context) error
	prod      *producer
	tracker   *pipeline.Tracker
	metrics   *metrics
	interval  time.Duration
	// backfill runs `replay snapshot` requests; its watermarks arrive
	// here in WAL order (nil: no backfills).
	backfill *backfiller
	// relationChanged hears of every Relation message (the encoding may
	// need the table's new column types).
	relationChanged func(schema, table string)
	// tx follows transactions for CDCSYNC_PROVIDE_TRANSACTION_METADATA
	// (nil: off); txTable says which changes it numbers (table topics').
	tx      *txMetadata
	txTable func(Change) bool
	// clock learns when the source was at which LSN, for the sinks'
	// watermarks (nil: no watermarks). Status updates then ask for a
	// keepalive, so an idle source is observed every status interval.
	clock *sourceClock
	// txn is the Kafka transaction state under exactly-once delivery
	// (nil: at least once); resumeAt is the LSN of the checkpoint the
	// session started from: units the slot sends again that end at or
	// before it are on Kafka already and dropped (skipping: inside such a
	// Postgres transaction). wm writes the watermarks into the stream's
	// transactions (exactly-once only; at least once runs its own loop).
	txn      *txn
	resumeAt pglogrepl.LSN
	skipping bool
	wm       *watermarker

	// rctx bounds one receive by the next status update; it is reused
	// until that deadline moves, since a context per message is costly.
	rctx      context.Context
	rcancel   context.CancelFunc
	rctxUntil time.Time
	captured  map[tableKey]prometheus.Counter

	ready Readiness
	// onPoison is CDCSYNC_ON_POISON; gate clears a stop on a poison
	// record once the confirmed LSN is past it.
	onPoison     string
	gate         *poisonGate
	stallTimeout time.Duration
	lastProgress time.Time // when acknowledgements last moved or nothing was in flight
	lastAcked    uint64
	stalled      bool

	started      bool // START_REPLICATION was issued: status updates may be sent
	inTx         bool
	txCommit     pglogrepl.LSN // commit LSN of the open transaction
	received     pglogrepl.LSN // highest WAL position received
	sentStatus   pglogrepl.LSN // LSN last confirmed to the server
	serverWALEnd pglogrepl.LSN // server's WAL end from the last keepalive
	nextStatus   time.Time
}

// start issues START_REPLICATION from lsn (0: the slot's confirmed LSN).
func (s *stream) start(ctx context.Context, slot, publication string, lsn pglogrepl.LSN) error {
	// publication_names is a quoted list of identifiers inside a literal.
	pub := pgx.Identifier{publication}.Sanitize()
	args := []string{
		"proto_version '1'",
		"publication_names " + quoteLiteral(pub),
		"messages 'true'",
	}
	if err := pglogrepl.StartReplication(ctx, s.conn, slot, lsn, pglogrepl.StartReplicationOptions{PluginArgs: args}); err != nil {
		return fmt.Errorf("start replication on slot %s: %w", slot, err)
	}
	s.received = lsn
	s.started = true
	return nil
}

// run streams until ctx is done or an error occurs. On ctx cancellation it
// returns ctx.Err(); the caller then flushes the producer and calls
// confirmFinal.
func (s *stream) run(ctx context.Context) error {
	s.nextStatus = time.Now().Add(s.interval)
	defer func() {
		if s.rcancel != nil {
			s.rcancel()
		}
	}()
	for {
		if err := s.prod.err(); err != nil {
			return err
		}
		if err := s.keepAlive(ctx); err != nil {
			return err
		}
		if s.tracker.Full() {
			// Backpressure: stop reading until Kafka catches up. The
			// server buffers in its WAL, not in our memory.
			if err := s.waitForRoom(ctx); err != nil {
				return err
			}
			continue
		}
		if err := s.receive(ctx); err != nil {
			return err
		}
	}
}

// keepAlive sends the standby status when it is due, also while the stream
// waits for Kafka (tracker full, producer not taking messages): the
// walsender ends a session that stays silent for wal_sender_timeout, and
// the status update is also where a stall is noticed and reported.
func (s *stream) keepAlive(ctx context.Context) error {
	// The initial snapshot runs before START_REPLICATION: there is no
	// stream to answer yet.
	if !s.started || time.Now().Before(s.nextStatus) {
		return nil
	}
	// With watermarks, ask for a keepalive in return: it tells when the
	// source was at which WAL position while it is idle.
	return s.sendStatus(ctx, s.clock != nil)
}

func (s *stream) waitForRoom(ctx context.Context) error {
	timer := time.NewTimer(time.Until(s.nextStatus))
	defer timer.Stop()
	select {
	case <-s.tracker.Changed():
	case <-timer.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// receive reads and handles one message, waiting at most until the next
// status update is due.
func (s *stream) receive(ctx context.Context) error {
	if s.rctx == nil || !s.rctxUntil.Equal(s.nextStatus) {
		if s.rcancel != nil {
			s.rcancel()
		}
		s.rctx, s.rcancel = context.WithDeadline(ctx, s.nextStatus)
		s.rctxUntil = s.nextStatus
	}
	rctx := s.rctx
	idle, commitIfIdle := s.idleDeadline()
	if commitIfIdle {
		// Exactly-once, a Kafka transaction open between Postgres
		// transactions: commit it once the source goes quiet.
		var cancel context.CancelFunc
		rctx, cancel = context.WithDeadline(ctx, idle)
		defer cancel()
	}
	raw, err := s.conn.ReceiveMessage(rctx)
	if err != nil {
		if pgconn.Timeout(err) && ctx.Err() == nil {
			if commitIfIdle {
				return s.commitTxn(ctx)
			}
			if s.txn != nil {
				return s.idleWatermark(ctx)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("receive from postgres: %w", err)
	}
	switch msg := raw.(type) {
	case *pgproto3.CopyData:
		return s.handleCopyData(ctx, msg.Data)
	case *pgproto3.ErrorResponse:
		pgErr := pgconn.ErrorResponseToPgError(msg)
		if pgErr.Code == pgerrcode.UndefinedObject && strings.Contains(pgErr.Message, "publication") {
			// pgoutput reads the publication as of the WAL it decodes: a
			// slot created before its publication fails on every retry.
			return fmt.Errorf("%w: %s; drop the slot so capture recreates it, or move it past the publication's creation with pg_replication_slot_advance", ErrSlotBeforePub, pgErr.Message)
		}
		return fmt.Errorf("replication stream: %w", pgErr)
	case *pgproto3.CopyDone:
		return errors.New("replication stream ended by the server")
	}
	return nil
}

func (s *stream) handleCopyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("parse keepalive: %w", err)
		}
		// With nothing in flight and no transaction open, everything up to
		// the server's WAL end is on Kafka: confirm it so the slot does not
		// pin WAL while captured tables are idle.
		s.serverWALEnd = ka.ServerWALEnd
		if !s.inTx {
			s.clock.observe(ka.ServerWALEnd, ka.ServerTime, false)
		}
		if !s.inTx && ka.ServerWALEnd > s.received {
			s.received = ka.ServerWALEnd
			s.tracker.AdvanceIdle(ka.ServerWALEnd)
		}
		if !s.inTx {
			s.releaseIdle()
		}
		if ka.ReplyRequested {
			return s.sendStatus(ctx, false)
		}
		return nil
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("parse xlogdata: %w", err)
		}
		return s.handleWAL(ctx, xld)
	}
	return nil
}

func (s *stream) handleWAL(ctx context.Context, xld pglogrepl.XLogData) error {
	msg, err := pglogrepl.Parse(xld.WALData)
	if err != nil {
		return fmt.Errorf("parse pgoutput message at %s: %w", xld.WALStart, err)
	}
	if xld.WALStart > s.received {
		s.received = xld.WALStart
		s.metrics.receivedLSN.Set(float64(s.received))
	}
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		s.inTx, s.txCommit = true, m.FinalLSN
		// The transaction's commit record starts at FinalLSN: one that
		// ended at or before the checkpoint started before it, one after
		// it starts at or after it.
		s.skipping = m.FinalLSN < s.resumeAt
	case *pglogrepl.InsertMessage, *pglogrepl.UpdateMessage, *pglogrepl.DeleteMessage, *pglogrepl.TruncateMessage:
		if s.skipping {
			return nil // on Kafka already (exactly-once resume)
		}
	case *pglogrepl.CommitMessage:
		if _, err := s.decoder.Decode(msg, xld.WALStart); err != nil {
			return err
		}
		if s.tx != nil && !s.skipping {
			if rec, ok := s.tx.end(s.txCommit); ok {
				if err := s.prod.send(ctx, rec, s.keepAlive, s.interval); err != nil {
					return err
				}
			}
		}
		s.inTx = false
		if m.TransactionEndLSN > s.received {
			s.received = m.TransactionEndLSN
		}
		s.tracker.Commit(m.TransactionEndLSN)
		s.clock.observe(m.TransactionEndLSN, m.CommitTime, true)
		s.metrics.inFlight.Set(float64(s.tracker.InFlight()))
		s.metrics.inFlightBytes.Set(float64(s.tracker.InFlightBytes()))
		if s.txn != nil {
			return s.unitDone(ctx, m.TransactionEndLSN)
		}
		return nil
	case *pglogrepl.LogicalDecodingMessage:
		return s.handleMessage(ctx, m, xld.WALStart)
	case *pglogrepl.RelationMessage:
		if s.relationChanged != nil {
			s.relationChanged(m.Namespace, m.RelationName)
		}
	case *pglogrepl.TypeMessage:
		// A Type message only names the type; the catalog says how to
		// encode it (a domain's base type, an array's element type).
		if s.loadTypes != nil && !s.types.Known(m.DataType) {
			if err := s.loadTypes(ctx); err != nil {
				return err
			}
		}
	}
	changes, err := s.decoder.Decode(msg, xld.WALStart)
	if err != nil {
		if pe := s.undecodable(msg, xld.WALStart, err); pe != nil {
			return s.poison(ctx, pe, Record{Topic: pe.Topic, Position: pe.Position})
		}
		return err
	}
	for _, c := range changes {
		if err := s.emit(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

func (s *stream) handleMessage(ctx context.Context, m *pglogrepl.LogicalDecodingMessage, at pglogrepl.LSN) (err error) {
	if m.Prefix == heartbeatPrefix {
		if !m.Transactional && !s.inTx {
			s.tracker.AdvanceIdle(at)
			s.releaseIdle()
		}
		return nil
	}
	if s.txn != nil && (s.skipping || !m.Transactional && at <= s.resumeAt) {
		if !m.Transactional {
			s.metrics.droppedOnResume.Inc()
		}
		return nil // on Kafka already (exactly-once resume)
	}
	if s.txn != nil && !m.Transactional {
		// A unit of its own: what it produced commits with the
		// checkpoint that covers it.
		defer func() {
			if err == nil {
				err = s.unitDone(ctx, at)
			}
		}()
	}
	if handled, err := s.backfillMessage(ctx, m, at); handled {
		return err
	}
	if s.message == nil {
		return nil
	}
	pos := pipeline.Position{Epoch: s.decoder.src.Epoch, Commit: s.txCommit, Change: at}
	if !m.Transactional {
		pos.Commit = at
	}
	rec, ok, err := s.message(m, pos)
	if err != nil {
		return fmt.Errorf("logical message %q at %s: %w", m.Prefix, at, err)
	}
	if !ok || rec.Topic == "" {
		return nil
	}
	return s.produce(ctx, rec, nil)
}

// produce sends rec, the record of change c (nil for a logical decoding
// message), and deals with a poison record.
func (s *stream) produce(ctx context.Context, rec Record, c *Change) error {
	err := s.prod.send(ctx, rec, s.keepAlive, s.interval)
	var pe *PoisonError
	if !errors.As(err, &pe) {
		return err
	}
	if c != nil {
		pe.Table, pe.KeyColumns = c.Schema+"."+c.Table, keyNames(c.Key)
	}
	return s.poison(ctx, pe, rec)
}

// emit routes and produces one change. The tracker may be at capacity
// mid-transaction: wait for room rather than buffer.
func (s *stream) emit(ctx context.Context, c Change) error {
	s.observeBackfill(c)
	for s.tracker.Full() {
		if err := s.prod.err(); err != nil {
			return err
		}
		if err := s.keepAlive(ctx); err != nil {
			return err
		}
		if err := s.waitForRoom(ctx); err != nil {
			return err
		}
	}
	if s.tx != nil && s.txTable(c) {
		if begin, ok := s.tx.observe(c); ok {
			if err := s.prod.send(ctx, begin, s.keepAlive, s.interval); err != nil {
				return err
			}
		}
	}
	rec, ok, err := s.route(c)
	if err != nil {
		return err
	}
	if !ok || rec.Topic == "" {
		return nil
	}
	if c.Event != nil {
		s.capturedCounter(c.Schema, c.Table).Inc()
	}
	return s.produce(ctx, rec, &c)
}

type tableKey struct{ schema, table string }

func (s *stream) capturedCounter(schema, table string) prometheus.Counter {
	k := tableKey{schema, table}
	c, ok := s.captured[k]
	if !ok {
		if s.captured == nil {
			s.captured = map[tableKey]prometheus.Counter{}
		}
		c = s.metrics.captured.WithLabelValues(schema + "." + table)
		s.captured[k] = c
	}
	return c
}

// sendStatus confirms the tracker's confirmed LSN to the server.
func (s *stream) sendStatus(ctx context.Context, replyRequested bool) error {
	confirmed := s.tracker.Confirmed()
	// Never claim more than was received (written >= flushed).
	if confirmed > s.received {
		confirmed = s.received
	}
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: s.received,
		WALFlushPosition: confirmed,
		WALApplyPosition: confirmed,
		ClientTime:       time.Now(),
		ReplyRequested:   replyRequested,
	})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	if confirmed != s.sentStatus {
		s.log.Debug("confirmed", "lsn", confirmed)
	}
	s.checkStall()
	if s.gate != nil && s.gate.passed(confirmed) {
		s.log.Info("moved past the poison record capture had stopped at", "confirmed", confirmed)
		s.metrics.stoppedOnPoison.Set(0)
		s.ready.SetReady()
	}
	s.sentStatus = confirmed
	s.metrics.confirmedLSN.Set(float64(confirmed))
	if s.serverWALEnd > confirmed {
		s.metrics.slotLagBytes.Set(float64(s.serverWALEnd - confirmed))
	} else {
		s.metrics.slotLagBytes.Set(0)
	}
	s.metrics.inFlight.Set(float64(s.tracker.InFlight()))
	s.metrics.inFlightBytes.Set(float64(s.tracker.InFlightBytes()))
	s.nextStatus = time.Now().Add(s.interval)
	return nil
}

// Header names and op values as shared byte slices: sarama only reads them.
var (
	headerPosition = []byte(pipeline.HeaderPosition)
	headerOp       = []byte(pipeline.HeaderOp)
	opValues       = map[pipeline.Op][]byte{}
)

func init() {
	for _, op := range []pipeline.Op{pipeline.OpCreate, pipeline.OpUpdate, pipeline.OpDelete, pipeline.OpRead, pipeline.OpTruncate} {
		opValues[op] = []byte(op)
	}
}

func opValue(op pipeline.Op) []byte {
	if v, ok := opValues[op]; ok {
		return v
	}
	return []byte(op)
}

// checkStall reports capture not ready while messages sit unacknowledged
// with no progress for stallTimeout (a broker that accepts connections but
// not writes), and ready again once acknowledgements resume.
func (s *stream) checkStall() {
	if s.ready == nil || s.stallTimeout <= 0 {
		return
	}
	now := time.Now()
	inFlight := s.tracker.InFlight()
	acked := s.tracker.Acked()
	progressed := acked != s.lastAcked
	s.lastAcked = acked
	if progressed || inFlight == 0 || s.lastProgress.IsZero() {
		s.lastProgress = now
		if s.stalled {
			s.stalled = false
			s.log.Info("acknowledgements resumed")
			s.ready.SetReady()
		}
		return
	}
	if !s.stalled && now.Sub(s.lastProgress) > s.stallTimeout {
		s.stalled = true
		reason := fmt.Sprintf("stalled: %d messages unacknowledged by Kafka for %v", inFlight, now.Sub(s.lastProgress).Round(time.Second))
		s.log.Warn(reason)
		s.ready.SetNotReady(reason)
	}
}

// tableRecord encodes a change for its table topic.
func tableRecord(prefix string, c Change) Record {
	rec := Record{
		Topic:    pipeline.Topic(prefix, c.Schema, c.Table),
		Position: c.Position,
		Headers:  []sarama.RecordHeader{{Key: headerPosition, Value: c.Position.AppendText(make([]byte, 0, 40))}},
	}
	switch {
	case c.Key != nil:
		rec.Key = c.Key.AppendJSON(nil)
	case c.Event != nil && c.Event.Op == pipeline.OpTruncate:
		// Compacted topics refuse records without a key.
		rec.Key = []byte(pipeline.TruncateKey)
	}
	if c.Event != nil {
		rec.Value = c.Event.AppendJSON(make([]byte, 0, 256))
		rec.Headers = append(rec.Headers, sarama.RecordHeader{Key: headerOp, Value: opValue(c.Event.Op)})
	}
	return rec
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string {
	out := make([]byte, 0, len(s)+2)
	out = append(out, '\'')
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}

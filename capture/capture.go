// Package capture streams committed changes from Postgres logical
// replication (pgoutput) into Kafka: slot and publication set-up, pgoutput
// decoding, the initial snapshot and the acknowledgement of LSNs.
package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

// Run streams changes until ctx is cancelled. It returns nil after a clean
// shutdown (producer flushed, final LSN confirmed). Lost connections to
// Postgres or Kafka restart the session with backoff from the confirmed LSN;
// configuration errors (ErrWALLevel, ErrNoKey, ...) are returned at once.
func Run(ctx context.Context, cfg config.Capture, logger *slog.Logger, reg prometheus.Registerer, opts ...Option) error {
	o := newOptions(opts)
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	tracker := pipeline.NewTracker(cfg.MaxInFlight)
	tracker.LimitBytes(cfg.MaxInFlightBytes)
	if cfg.Delivery == deliveryExactlyOnce {
		tracker.HoldUntilReleased() // confirmed only once committed on Kafka
	}
	gate := &poisonGate{Readiness: o.ready}
	o.ready = gate
	c := &capturer{cfg: cfg, log: logger, metrics: m, tracker: tracker, opts: o, gate: gate}
	defer o.ready.SetNotReady("stopped")

	var wg sync.WaitGroup
	defer wg.Wait()
	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	defer stopHeartbeat()
	if cfg.HeartbeatInterval > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); c.heartbeat(hbCtx) }()
	}

	const maxBackoff = 30 * time.Second
	backoff := time.Second
	waitingLogged := false
	for {
		started := time.Now()
		err := c.session(ctx)
		if ctx.Err() != nil {
			// A stop asked for (SIGTERM) is a clean exit whatever the
			// session was doing (set-up, snapshot: its error is then
			// just the cancellation); only a failed final flush or
			// confirmation is reported.
			var sd *shutdownError
			if errors.As(err, &sd) {
				return err
			}
			return nil
		}
		var poison *PoisonError
		if errors.As(err, &poison) {
			// The same change fails however often the session restarts:
			// stop there, say so once, and retry seldom.
			c.metrics.poisonRecords.WithLabelValues(poison.Topic, "stopped").Inc()
			c.metrics.stoppedOnPoison.Set(1)
			if prev := gate.stuck.Load(); prev == nil || prev.Position != poison.Position {
				logger.Error("capture stopped on a poison record; the slot keeps the WAL from here until it is resolved",
					append(poison.logAttrs(), "err", poison.Error(), "fix", poison.Fix())...)
			}
			gate.stop(poison)
			if !sleep(ctx, poisonRetry) {
				return nil
			}
			continue
		}
		switch {
		case permanent(err):
			return err
		case errors.Is(err, ErrFenced):
			// A capture that took the slot over initialised the same
			// transactional.id: this session's producer wrote nothing
			// after that. Step back and wait for the slot's lock like
			// any standby.
			logger.Warn("fenced: another capture of the slot took over; standing by", "slot", cfg.Slot, "err", err)
			waitingLogged = true
			if !sleep(ctx, standbyPoll) {
				return nil
			}
			continue
		case errors.Is(err, ErrSlotActive):
			if cfg.SlotBusy == "fail" {
				return err
			}
			// Standby: another capture holds the slot; take over as
			// soon as it lets go.
			if !waitingLogged {
				logger.Info("standing by: slot is held by another capture", "slot", cfg.Slot, "detail", err)
				waitingLogged = true
			}
			o.ready.SetReady() // a healthy standby
			if !sleep(ctx, standbyPoll) {
				return nil
			}
			continue
		}
		waitingLogged = false
		if time.Since(started) > time.Minute {
			backoff = time.Second
		}
		c.metrics.reconnects.Inc()
		o.ready.SetNotReady("reconnecting: " + err.Error())
		logger.Warn("capture session ended; restarting from the confirmed LSN", "err", err, "retry_in", backoff)
		if !sleep(ctx, backoff) {
			return nil
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// standbyPoll is how often a standby tries to take the slot's lock: it
// takes over within about this long after the active capture's connection
// is gone.
const standbyPoll = time.Second

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

type capturer struct {
	cfg     config.Capture
	log     *slog.Logger
	metrics *metrics
	tracker *pipeline.Tracker
	opts    options
	gate    *poisonGate
}

// connConfig parses the source URL with capture's session parameters.
func (c *capturer) connConfig() (*pgx.ConnConfig, error) {
	pc, err := pgx.ParseConfig(c.cfg.SourceURL)
	if err != nil {
		return nil, fmt.Errorf("CDCSYNC_SOURCE_URL: %w", err)
	}
	for k, v := range SessionParams() {
		pc.RuntimeParams[k] = v
	}
	pc.RuntimeParams["application_name"] = "cdcsync-capture"
	return pc, nil
}

func (c *capturer) connect(ctx context.Context) (*pgx.Conn, error) {
	pc, err := c.connConfig()
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect to source: %w", err)
	}
	return conn, nil
}

func (c *capturer) replicationConnect(ctx context.Context) (*pgconn.PgConn, error) {
	pc, err := c.connConfig()
	if err != nil {
		return nil, err
	}
	rc := pc.Config.Copy()
	rc.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, rc)
	if err != nil {
		return nil, fmt.Errorf("open replication connection: %w", err)
	}
	return conn, nil
}

// session runs one replication session: set-up, snapshot if due, stream.
// It holds the slot's advisory lock (lock.go) throughout; without it,
// another capture holds the slot and session returns ErrSlotActive.
func (c *capturer) session(parent context.Context) (err error) {
	lockConn, err := c.connect(parent)
	if err != nil {
		return err
	}
	defer lockConn.Close(context.Background())
	lock, err := acquireSlotLock(parent, lockConn, c.cfg.Slot)
	if err != nil {
		return err
	}
	// Losing the lock's connection ends the session: another capture may
	// take the slot over, so this one must stop producing at once.
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	lockWatched := make(chan struct{})
	go func() { defer close(lockWatched); lock.watch(ctx, cancel) }()
	defer func() { cancel(nil); <-lockWatched }()
	defer func() {
		if parent.Err() == nil && ctx.Err() != nil {
			if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
				err = cause
			}
		}
	}()

	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	router, err := NewOutboxRouter(c.cfg)
	if err != nil {
		return err
	}
	captured := c.cfg.Tables
	if schema, table, ok := router.Table(); ok && !slices.Contains(captured, schema+"."+table) {
		captured = append(slices.Clip(captured), schema+"."+table)
	}
	tables, err := checkSource(ctx, conn, captured)
	if err != nil {
		return err
	}
	// Before tables are added to it: adding a partitioned table to a
	// publication that lists its partitions fails with "already member".
	if err := validatePublication(ctx, conn, c.cfg.Publication, tables); err != nil {
		return err
	}
	publishedBefore, err := publishedTables(ctx, conn, c.cfg.Publication)
	if err != nil {
		return err
	}
	if err := ensurePublication(ctx, conn, c.cfg.Publication, tables); err != nil {
		return err
	}
	state := stateStore{schema: c.cfg.StateSchema}
	if err := state.ensure(ctx, conn); err != nil {
		return err
	}
	types := NewTypes()
	if err := types.LoadTypes(ctx, conn); err != nil {
		return err
	}
	// The URL may name no database (Postgres then takes the role's name):
	// ask the server which one this is, for source.db and the slot check.
	var dbName string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&dbName); err != nil {
		return fmt.Errorf("read current database: %w", err)
	}
	src := SourceInfo{Name: c.cfg.TopicPrefix, DB: dbName, PrimaryKeys: map[string][]string{}}
	for _, t := range tables {
		src.PrimaryKeys[t.String()] = t.Key
	}

	slot, err := readSlot(ctx, conn, c.cfg.Slot)
	if err != nil {
		return err
	}
	if slot.Exists {
		if slot.Plugin != "pgoutput" || slot.Database != src.DB {
			return fmt.Errorf("%w: slot %s uses plugin %q in database %q; want pgoutput in %q (drop it or choose another CDCSYNC_SLOT)",
				ErrSlotWrongSetup, c.cfg.Slot, slot.Plugin, slot.Database, src.DB)
		}
		if slot.Active {
			return fmt.Errorf("%w: slot %s is streaming to pid %d", ErrSlotActive, c.cfg.Slot, slot.ActivePID)
		}
	}
	repl, err := c.replicationConnect(ctx)
	if err != nil {
		return err
	}
	defer repl.Close(context.Background())

	// A slot lost to a failover, a restore or invalidation, or another
	// source cluster: refused before anything is created or confirmed.
	sources := sourceStore{schema: c.cfg.StateSchema}
	identity, lost, err := c.checkSlotAndSource(ctx, conn, repl, sources, slot.Exists)
	if err != nil {
		return err
	}
	if lost {
		slot.Exists = false // dropped, or missing: created again below
	}

	// Before the decoder exists: every position carries the epoch.
	if src.Epoch, err = state.sourceEpoch(ctx, conn, c.cfg.Slot, slot.Exists, lost); err != nil {
		return err
	}
	if src.Epoch != 0 {
		c.log.Info("source epoch", "slot", c.cfg.Slot, "epoch", src.Epoch)
	}

	// The outbox table's existing rows are old events: the router would
	// drop every one, so they are not read at all.
	snapTables := slices.DeleteFunc(slices.Clone(tables), func(t tableInfo) bool { return router.IsOutboxTable(t.Schema, t.Name) })
	// Before the slot exists: a stop between the two still snapshots.
	initial, err := c.planSnapshot(ctx, conn, snapTables, slot.Exists, publishedBefore)
	if err != nil {
		return err
	}
	rec, err := c.loadRecovery(ctx, conn, src.Epoch, slot.ConfirmedFlush)
	if err != nil {
		return err
	}

	prod, err := startProducer(ctx, c.cfg, c.tracker, c.metrics)
	if err != nil {
		return err
	}
	if c.cfg.Delivery == deliveryExactlyOnce {
		// The producer's initialisation fenced any earlier producer of
		// this slot and aborted what it left open.
		prod.txn = newTxn(prod.ap, c.cfg, c.log, c.metrics, c.tracker)
		prod.txn.deliveryErr = prod.deliveryErr
	}
	go prod.ackLoop()
	producerClosed := false
	defer func() {
		if !producerClosed {
			// The next session starts only when this producer can
			// write nothing more (see close).
			if err := prod.close(2*time.Second, prod.answerWait); err != nil {
				c.log.Warn("closing the session's producer", "err", err)
			}
		}
	}()
	for _, t := range tables {
		if router.IsOutboxTable(t.Schema, t.Name) {
			continue // its inserts go to event topics, created when first seen
		}
		topic := pipeline.Topic(c.cfg.TopicPrefix, t.Schema, t.Name)
		if err := prod.ensureTableTopic(topic); err != nil {
			return err
		}
		c.checkTopicLimit(prod, topic)
	}

	resume, err := c.readCheckpoint(prod, src.Epoch)
	if err != nil {
		return err
	}

	records, err := newRecordEncoder(c.cfg, c.connect, tables)
	if err != nil {
		return err
	}
	txm := newTxMetadata(c.cfg)
	if txm != nil {
		if err := prod.ensureTopic(txm.topic); err != nil {
			return err
		}
	}
	decoder := NewDecoder(src, types)
	moved := &movedRows{connect: c.connect}
	defer moved.close()
	decoder.SetMovedRowFetcher(moved.fetcher(ctx))
	st := &stream{
		log: c.log, conn: repl, decoder: decoder, prod: prod, tracker: c.tracker,
		metrics: c.metrics, interval: c.cfg.StatusInterval, types: types,
		ready: c.opts.ready, stallTimeout: c.opts.stallTimeout, onPoison: c.cfg.OnPoison, gate: c.gate,
		loadTypes: func(ctx context.Context) error {
			tc, err := c.connect(ctx)
			if err != nil {
				return err
			}
			defer tc.Close(context.Background())
			return types.LoadTypes(ctx, tc)
		},
		route: func(ch Change) (Record, bool, error) {
			if rec, ok, err := router.Change(ch); ok {
				return c.deadLetterInvalid(rec, err)
			}
			rec, err := records.record(ch)
			return rec, err == nil, err
		},
		relationChanged: records.relationChanged,
		tx:              txm,
		txTable:         func(ch Change) bool { return !router.IsOutboxTable(ch.Schema, ch.Table) },
		message: func(m *pglogrepl.LogicalDecodingMessage, pos pipeline.Position) (Record, bool, error) {
			rec, ok, err := router.Message(m, pos)
			if !ok {
				return rec, false, err
			}
			return c.deadLetterInvalid(rec, err)
		},
	}

	st.txn, st.resumeAt = prod.txn, resume.LSN
	st.backfill = newBackfiller(c, src, types, tables, initial)
	// Its own copy: the backfiller forgets entries as it resumes them,
	// while the stream encodes the checkpoint, which holds the same map.
	st.backfill.resume = maps.Clone(resume.Backfills)
	st.backfill.snapshotted = snapTables
	st.backfill.recovery = rec
	// While a re-snapshot after a lost slot is on, /readyz says so.
	gate := &recoveryGate{Readiness: c.opts.ready, rec: rec, tracker: c.tracker}
	st.ready = gate
	if c.cfg.WatermarkInterval > 0 {
		st.clock = &sourceClock{}
	}

	var startLSN pglogrepl.LSN // 0: resume from the slot's confirmed LSN
	c.tracker.Reset(slot.ConfirmedFlush)
	if !slot.Exists {
		if startLSN, err = c.createSlot(ctx, repl); err != nil {
			return err
		}
		c.tracker.Reset(startLSN)
		if c.opts.afterSlotCreated != nil {
			c.opts.afterSlotCreated(ctx)
		}
		if err := state.setConsistentLSN(ctx, conn, c.cfg.Slot, startLSN); err != nil {
			return err
		}
	}
	// Exactly-once: what the checkpoint covers is committed on Kafka.
	c.tracker.Release(resume.LSN)
	// The slot exists now: from here on, its absence means it was lost.
	if err := sources.record(ctx, conn, c.cfg.Slot, identity); err != nil {
		return err
	}
	conn.Close(ctx) // not needed while streaming

	if err := st.start(ctx, c.cfg.Slot, c.cfg.Publication, startLSN); err != nil {
		return slotErr(err)
	}
	c.log.Info("streaming", "slot", c.cfg.Slot, "from", startLSN, "confirmed", c.tracker.Confirmed())
	// Backfills (the initial snapshot among them) start once this session
	// owns the slot and end with it: their progress relies on this
	// session's tracker.
	backfillCtx, stopBackfill := context.WithCancel(ctx)
	backfillDone := make(chan struct{})
	go func() { defer close(backfillDone); st.backfill.run(backfillCtx) }()
	defer func() { stopBackfill(); <-backfillDone }()
	// Watermarks skip a table until its initial snapshot is done: until
	// then the confirmed LSN does not cover its existing rows.
	stopWatermarks := c.startWatermarks(ctx, st, prod, tables, router)
	defer stopWatermarks() // before the producer closes (defers run last first)
	gateCtx, stopGate := context.WithCancel(ctx)
	gateDone := make(chan struct{})
	go func() { defer close(gateDone); gate.run(gateCtx) }()
	defer func() { stopGate(); <-gateDone }()
	gate.SetReady()
	runErr := st.run(ctx)
	if parent.Err() == nil {
		return runErr // an error, or the lock was lost (see the deferred cause)
	}
	gate.SetNotReady("shutting down")
	// Shutdown: flush what is in flight, confirm it, leave.
	c.log.Info("shutting down: flushing producer and confirming the final LSN")
	stopWatermarks()
	// Within CDCSYNC_SHUTDOWN_TIMEOUT: exactly once, half to end the Kafka
	// transaction; of what is left (less close's grace), half to flush and
	// half to wait for a request the broker still holds (see close).
	deadline := time.Now().Add(c.cfg.ShutdownTimeout)
	txnErr := c.endTxn(st, prod, time.Now().Add(c.cfg.ShutdownTimeout/2)) // at once at least once
	left := max(time.Until(deadline)-closeGrace, 0)
	closeErr := errors.Join(txnErr, prod.close(left/2, left/2))
	producerClosed = true
	fctx, cancelStatus := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancelStatus()
	statusErr := st.sendStatus(fctx, false)
	if err := errors.Join(closeErr, statusErr); err != nil {
		return &shutdownError{err: err}
	}
	c.log.Info("stopped", "confirmed", c.tracker.Confirmed())
	return nil
}

// deadLetterInvalid sends a malformed outbox event to the outbox dead-letter
// topic instead of stopping capture: the transaction committed, so the event
// must not vanish, and it cannot be delivered as an event either.
func (c *capturer) deadLetterInvalid(rec Record, err error) (Record, bool, error) {
	var invalid *InvalidOutboxEventError
	if errors.As(err, &invalid) {
		c.log.Warn("malformed outbox event sent to the dead-letter topic", "topic", invalid.DeadLetter.Topic,
			"position", invalid.DeadLetter.Position, "err", invalid.Err)
		return invalid.DeadLetter, true, nil
	}
	return rec, err == nil, err
}

// createSlot creates the slot and returns its consistent point. No snapshot
// is exported: existing rows are read as backfills (planSnapshot), which
// need no snapshot lined up with the slot.
func (c *capturer) createSlot(ctx context.Context, repl *pgconn.PgConn) (pglogrepl.LSN, error) {
	res, err := createLogicalSlot(ctx, repl, c.cfg.Slot, "NOEXPORT_SNAPSHOT")
	if err != nil {
		return 0, fmt.Errorf("create slot %s: %w", c.cfg.Slot, slotErr(err))
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return 0, fmt.Errorf("create slot %s: consistent point: %w", c.cfg.Slot, err)
	}
	c.log.Info("created replication slot", "slot", c.cfg.Slot, "consistent_point", lsn)
	return lsn, nil
}

// slotErr classifies "slot in use" errors as ErrSlotActive.
func slotErr(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.ObjectInUse {
		return fmt.Errorf("%w: %s", ErrSlotActive, pgErr.Message)
	}
	return err
}

// heartbeat writes a non-transactional logical message every interval so
// that a slot whose tables are idle still receives WAL it can confirm, even
// while other databases on the server write (guarantee 4).
func (c *capturer) heartbeat(ctx context.Context) {
	ticker := time.NewTicker(c.cfg.HeartbeatInterval)
	defer ticker.Stop()
	warn := newWarnLimiter(time.Minute)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if conn == nil {
			var err error
			if conn, err = c.connect(ctx); err != nil {
				if ctx.Err() == nil {
					c.metrics.heartbeatFailures.Inc()
					warn.log(c.log, "heartbeat: cannot connect; an idle slot does not advance until it can", "err", err)
				}
				continue
			}
		}
		_, err := conn.Exec(ctx, "SELECT pg_logical_emit_message(false, $1, $2)", heartbeatPrefix, time.Now().UTC().Format(time.RFC3339Nano))
		if err != nil {
			if ctx.Err() == nil {
				c.metrics.heartbeatFailures.Inc()
				warn.log(c.log, "heartbeat failed", "err", err)
			}
			conn.Close(context.Background())
			conn = nil
		}
	}
}

// shutdownError is a failure of the final flush or confirmation after a
// stop was asked for: the one error a stopping capture reports.
type shutdownError struct{ err error }

func (e *shutdownError) Error() string { return "shutdown: " + e.err.Error() }
func (e *shutdownError) Unwrap() error { return e.err }

// warnLimiter logs each distinct warning at most once per interval, with
// the number of repeats it held back, so a failure that repeats every few
// seconds for hours is visible without flooding the log.
type warnLimiter struct {
	interval time.Duration
	last     map[string]time.Time
	held     map[string]int
}

func newWarnLimiter(interval time.Duration) *warnLimiter {
	return &warnLimiter{interval: interval, last: map[string]time.Time{}, held: map[string]int{}}
}

func (w *warnLimiter) log(l *slog.Logger, msg string, args ...any) {
	now := time.Now()
	if last, ok := w.last[msg]; ok && now.Sub(last) < w.interval {
		w.held[msg]++
		return
	}
	if n := w.held[msg]; n > 0 {
		args = append(args, "repeated", n)
	}
	w.last[msg], w.held[msg] = now, 0
	l.Warn(msg, args...)
}

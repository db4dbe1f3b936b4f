package capture

// Backfills (`cdcsync replay snapshot`) re-read tables while capture keeps
// streaming, with DBLog's watermark algorithm. Per chunk the backfiller
//
//  1. writes a low watermark (a non-transactional logical message) and
//     waits for the transactions that were writing the table at that
//     moment to end (see waitForWriters);
//  2. reads the next chunk in key order: key > last key AND predicate;
//  3. hands the rows to the stream goroutine and writes a high watermark.
//
// The stream goroutine sees the watermarks in WAL order among the
// transactions. From the low one it records the keys of the table that
// changes touch; at the high one it drops those keys from the chunk (the
// stream already carries a newer version of those rows) and emits the rest
// as op "r" at the high watermark's position (backfill_window.go is that
// side, and says why the rows sort just before it). A transaction the
// chunk did not see commits after the low watermark, so it is either
// inside the window (its keys are dropped) or after the high watermark
// (its events are newer than the chunk's rows): no sink ends up with a
// stale row.
//
// Progress (the last key on Kafka) is stored only once Kafka acknowledged
// a chunk, so a capture restart resumes without losing rows.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

// watermarkPrefix marks the low and high watermark messages. Their content
// is "<window tag>:low" or "<window tag>:high".
const watermarkPrefix = "cdcsync.watermark"

const (
	// backfillPoll is how often the backfill table is read when no signal
	// message arrives (a request made while capture was down, a lost
	// signal).
	backfillPoll = 3 * time.Second
	// progressEvery is how often a running backfill logs its progress.
	progressEvery = 10 * time.Second
	// writerWaitWarn is how long a chunk waits for open writers of the
	// table before saying so in the log.
	writerWaitWarn = 10 * time.Second
)

// backfiller runs the backfills of one capture session on its own
// connection. Its fields below mu are shared with the stream goroutine;
// open and keyBuf belong to the stream goroutine alone.
type backfiller struct {
	cfg      config.Capture
	log      *slog.Logger
	metrics  *metrics
	tracker  *pipeline.Tracker
	types    *Types
	source   SourceInfo
	captured map[string]bool // "schema.table" of the session's tables
	// snapshotted are the tables the initial snapshot reads (the outbox
	// table is not): those whose topics get the resnapshot-done marker.
	snapshotted []tableInfo
	// recovery is the re-snapshot after a lost slot, when this session
	// runs or resumes one (recovery.go); nil otherwise.
	recovery *recovery
	connect  func(context.Context) (*pgx.Conn, error)
	store    backfillStore
	wake     chan struct{}

	mu      sync.Mutex
	windows map[string]*window // by tag, registered before the low watermark
	// initial holds the initial snapshot's unfinished backfills; firstID
	// is the one whose first row starts the snapshot, lastID the one
	// whose last row ends it (Debezium's "first" and "last" marks).
	initial         initialBackfills
	firstID, lastID int64

	open   *window // window between its low and high watermark in the stream
	keyBuf []byte
	// resume holds the backfills' progress in the Kafka checkpoint the
	// session started from (exactly-once delivery; backfill_eos.go).
	resume map[int64]pipeline.BackfillMark
}

func newBackfiller(c *capturer, src SourceInfo, types *Types, tables []tableInfo, initial initialBackfills) *backfiller {
	captured := make(map[string]bool, len(tables))
	for _, t := range tables {
		captured[t.String()] = true
	}
	var firstID, lastID int64
	for id := range initial {
		if firstID == 0 || id < firstID {
			firstID = id
		}
		lastID = max(lastID, id)
	}
	return &backfiller{
		initial: initial, firstID: firstID, lastID: lastID,
		cfg: c.cfg, log: c.log.With("component", "backfill"), metrics: c.metrics, tracker: c.tracker,
		types: types, source: src, captured: captured,
		connect: func(ctx context.Context) (*pgx.Conn, error) {
			pc, err := c.connConfig()
			if err != nil {
				return nil, err
			}
			pc.RuntimeParams["application_name"] = "cdcsync-backfill"
			conn, err := pgx.ConnectConfig(ctx, pc)
			if err != nil {
				return nil, fmt.Errorf("backfill: connect to source: %w", err)
			}
			return conn, nil
		},
		store:   backfillStore{schema: c.cfg.StateSchema},
		wake:    make(chan struct{}, 1),
		windows: map[string]*window{},
	}
}

// snapshotting reports whether table ("schema.table") has its initial
// snapshot still to finish: its topic is not complete up to any LSN yet.
func (b *backfiller) snapshotting(table string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range b.initial {
		if t == table {
			return true
		}
	}
	return false
}

// initialMarks returns source.snapshot for backfill id's rows and, for
// the initial snapshot, the marks of its first and last rows.
func (b *backfiller) initialMarks(id int64) (mark, first, last string) {
	b.mu.Lock()
	_, initial := b.initial[id]
	b.mu.Unlock()
	if !initial {
		return "incremental", "", ""
	}
	first, last = "first_in_data_collection", "last_in_data_collection"
	if id == b.firstID {
		first = "first"
	}
	if id == b.lastID {
		last = "last"
	}
	return "true", first, last
}

// signal wakes the backfiller: a request was written.
func (b *backfiller) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// run executes pending backfills of the slot until ctx ends. Connection
// problems are retried; a backfill that cannot run (bad table, bad
// predicate, an SQL error) is marked failed and the others go on.
func (b *backfiller) run(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	backoff := time.Second
	for {
		var err error
		if conn == nil {
			conn, err = b.connect(ctx)
			if err == nil {
				err = b.store.ensure(ctx, conn)
			}
		}
		if err == nil {
			err = b.runPending(ctx, conn)
		}
		if ctx.Err() != nil {
			return
		}
		wait := backfillPoll
		if err != nil {
			b.log.Warn("backfill interrupted; retrying", "err", err, "retry_in", backoff)
			if conn != nil {
				conn.Close(context.Background())
				conn = nil
			}
			wait, backoff = backoff, min(backoff*2, 30*time.Second)
		} else {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
		case <-time.After(wait):
		}
	}
}

// runPending runs the slot's pending and running backfills in id order.
func (b *backfiller) runPending(ctx context.Context, conn *pgx.Conn) error {
	for {
		todo, err := b.store.list(ctx, conn, b.cfg.Slot, nil, BackfillPending, BackfillRunning)
		if err != nil {
			return err
		}
		if len(todo) == 0 {
			return b.finishSnapshot(ctx, conn)
		}
		for _, bf := range todo {
			if err := b.runOne(ctx, conn, bf); err != nil {
				return err
			}
		}
	}
}

// finishSnapshot records that the initial snapshot is complete once its
// last backfill is done.
func (b *backfiller) finishSnapshot(ctx context.Context, conn *pgx.Conn) error {
	if b.cfg.Snapshot == "never" {
		return nil
	}
	// The snapshot's end and, in a source epoch above 0, the message that
	// has the sinks sweep (resnapshot.go) commit together: neither is
	// lost to a stop between the two.
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("finish initial snapshot: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	state := stateStore{schema: b.cfg.StateSchema}
	finished, err := state.finishSnapshot(ctx, tx, b.cfg.Slot)
	if err != nil {
		return err
	}
	if finished && b.source.Epoch > 0 {
		if err := requestResnapshotDone(ctx, tx, state, b.cfg.Slot, b.source.Epoch); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("finish initial snapshot: %w", err)
	}
	if finished {
		b.log.Info("initial snapshot done", "slot", b.cfg.Slot, "source_epoch", b.source.Epoch)
	}
	return nil
}

// runOne runs (or resumes) one backfill. Errors it returns are transient:
// the backfill stays running and is resumed from its stored progress.
func (b *backfiller) runOne(ctx context.Context, conn *pgx.Conn, bf Backfill) error {
	target, err := b.prepare(ctx, conn, bf)
	if err != nil {
		return b.failOrRetry(ctx, conn, bf, err)
	}
	ok, err := b.store.markRunning(ctx, conn, bf.ID)
	if err != nil || !ok {
		return err
	}
	log := b.log.With("backfill", bf.ID, "table", bf.TableName())
	if err := b.resumeFromCheckpoint(ctx, conn, &bf, log); err != nil {
		return err
	}
	if bf.LastKey == nil {
		log.Info("backfill started", "where", bf.Where, "chunk_size", bf.ChunkSize, "rows_estimate", bf.RowsTotal)
	} else {
		// The key itself is row data and stays out of the log.
		log.Info("backfill resumed", "chunks_done", bf.ChunksDone, "rows_done", bf.RowsDone)
	}
	started, startRows := time.Now(), bf.RowsDone
	done, err := b.chunks(ctx, conn, &bf, target)
	if err != nil {
		return b.failOrRetry(ctx, conn, bf, err)
	}
	if !done {
		log.Info("backfill cancelled", "rows_done", bf.RowsDone)
		return nil
	}
	b.mu.Lock()
	delete(b.initial, bf.ID)
	b.mu.Unlock()
	elapsed := time.Since(started)
	log.Info("backfill done", "rows", bf.RowsDone, "skipped_newer_in_stream", bf.RowsSkipped,
		"elapsed", elapsed.Round(time.Millisecond), "rows_per_s", int64(float64(bf.RowsDone-startRows)/max(elapsed.Seconds(), 1e-3)))
	return nil
}

// failOrRetry marks the backfill failed for errors no retry fixes and
// returns transient ones.
func (b *backfiller) failOrRetry(ctx context.Context, conn *pgx.Conn, bf Backfill, err error) error {
	if ctx.Err() != nil || !permanentBackfillErr(err) {
		return err
	}
	b.log.Warn("backfill failed", "backfill", bf.ID, "table", bf.TableName(), "err", err)
	return b.store.fail(ctx, conn, bf.ID, err.Error())
}

// permanentBackfillErr: the request itself is wrong (table, predicate,
// chunk size) or Postgres rejects the chunk query.
func permanentBackfillErr(err error) bool {
	for _, e := range []error{ErrNoSuchTable, ErrNoKey, ErrNotPublished, ErrBadWhere, ErrBadChunkSize, errBackfillValue} {
		if errors.Is(err, e) {
			return true
		}
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && !transientPgError(pgErr)
}

// backfillTarget is a validated backfill: its table, key column types and
// chunk query.
type backfillTarget struct {
	table   tableInfo
	oid     uint32   // the table's pg_class oid
	keyOIDs []uint32 // types of the key columns, for the last-key parameters
	first   string   // chunk query without a last key
	next    string   // chunk query after a last key ($1..$k), limit $k+1
}

// prepare validates a backfill against the catalog as it is now.
func (b *backfiller) prepare(ctx context.Context, conn *pgx.Conn, bf Backfill) (*backfillTarget, error) {
	if bf.ChunkSize < 1 || bf.ChunkSize > maxChunkSize {
		return nil, fmt.Errorf("%w, got %d", ErrBadChunkSize, bf.ChunkSize)
	}
	t, err := backfillTable(ctx, conn, bf.TableName())
	if err != nil {
		return nil, err
	}
	if !b.captured[t.String()] {
		return nil, fmt.Errorf("%w: %s is not captured by slot %s (add it to CDCSYNC_TABLES)", ErrNotPublished, t, b.cfg.Slot)
	}
	if _, err := validateWhere(ctx, conn, t, bf.Where); err != nil {
		return nil, err
	}
	if err := b.types.LoadTypes(ctx, conn); err != nil {
		return nil, err
	}
	target := &backfillTarget{table: t}
	rows, err := conn.Query(ctx, `
		SELECT c.oid, a.attname, a.atttypid FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = ANY($3)`, t.Schema, t.Name, t.Key)
	if err != nil {
		return nil, fmt.Errorf("look up key types of %s: %w", t, err)
	}
	types := map[string]uint32{}
	for rows.Next() {
		var name string
		var typ uint32
		if err := rows.Scan(&target.oid, &name, &typ); err != nil {
			rows.Close()
			return nil, fmt.Errorf("look up key types of %s: %w", t, err)
		}
		types[name] = typ
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up key types of %s: %w", t, err)
	}
	keys := make([]string, len(t.Key))
	params := make([]string, len(t.Key))
	for i, k := range t.Key {
		typ, ok := types[k]
		if !ok {
			return nil, fmt.Errorf("look up key types of %s: column %s not found", t, k)
		}
		target.keyOIDs = append(target.keyOIDs, typ)
		keys[i] = pgx.Identifier{k}.Sanitize()
		params[i] = fmt.Sprintf("$%d", i+1)
	}
	// The columns the stream carries (no generated ones), as the initial
	// snapshot reads them.
	colRows, err := conn.Query(ctx, publishedColumnsSQL, t.Schema, t.Name)
	if err != nil {
		return nil, fmt.Errorf("list columns of %s: %w", t, err)
	}
	cols, err := pgx.CollectRows(colRows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list columns of %s: %w", t, err)
	}
	for i, c := range cols {
		cols[i] = pgx.Identifier{c}.Sanitize()
	}
	order := strings.Join(keys, ", ")
	selectFrom := "SELECT " + strings.Join(cols, ", ") + " FROM " + t.ident()
	filter := whereClause(bf.Where)
	target.first = selectFrom + " WHERE true" + filter + " ORDER BY " + order + " LIMIT $1"
	target.next = selectFrom + " WHERE ROW(" + order + ") > ROW(" + strings.Join(params, ", ") + ")" +
		filter + " ORDER BY " + order + fmt.Sprintf(" LIMIT $%d", len(keys)+1)
	return target, nil
}

// pendingChunk is a chunk handed to the stream but not yet known to be on
// Kafka.
type pendingChunk struct {
	w       *window
	n       int64
	lastKey []string // key of the chunk's last row; nil for an empty chunk
	rows    int
	more    bool // the table may have rows after this chunk
}

// acked reports whether the stream emitted the chunk and Kafka
// acknowledged everything up to it. The stream marks the high watermark as
// a commit in the tracker, and the backfiller lives no longer than its
// session, so a confirmed LSN at or past it covers the chunk's rows.
func (p *pendingChunk) acked(tr *pipeline.Tracker) bool {
	select {
	case <-p.w.done:
	default:
		return false
	}
	return p.w.err != nil || tr.Confirmed() >= p.w.high
}

// chunks reads the backfill's chunks until the table is exhausted. It
// returns done false when the backfill was cancelled.
//
// At most one chunk is on its way to Kafka with its progress not stored:
// the next chunk is read while the previous one is produced, but its high
// watermark (which hands it to the stream) is written only once the
// previous one is acknowledged and its progress stored. A capture stopped
// at any moment therefore reads at most one chunk again.
func (b *backfiller) chunks(ctx context.Context, conn *pgx.Conn, bf *Backfill, target *backfillTarget) (done bool, err error) {
	var inFlight *pendingChunk // handed to the stream, progress not stored
	defer func() {
		if inFlight != nil {
			b.abandon(inFlight.w)
		}
	}()
	prog := newProgress(b, bf)
	// store waits until inFlight is on Kafka and stores the progress;
	// with finish, it also finishes the backfill. It reports false when
	// the backfill was cancelled meanwhile.
	store := func(finish bool) (running bool, err error) {
		if p := inFlight; p != nil {
			if err := b.waitAcked(ctx, p); err != nil {
				return false, err
			}
			if p.w.err != nil {
				return false, p.w.err
			}
			inFlight = nil
			if p.lastKey != nil {
				bf.LastKey = p.lastKey
			}
			bf.ChunksDone = p.n + 1
			bf.RowsDone += int64(p.rows)
			bf.RowsSkipped += int64(p.w.skipped)
		} else if !finish {
			return true, nil
		}
		running, err = b.store.saveProgress(ctx, conn, bf, finish)
		prog.update(bf)
		return running, err
	}

	lastKey := bf.LastKey
	for n := bf.ChunksDone; ; n++ {
		p, err := b.readChunk(ctx, conn, bf, target, lastKey, n)
		if err != nil {
			return false, err
		}
		if running, err := store(false); err != nil || !running {
			b.abandon(p.w)
			return false, err
		}
		b.setMark(p, bf)
		if err := b.handOver(ctx, conn, bf, p); err != nil {
			b.abandon(p.w)
			return false, err
		}
		inFlight = p
		if !p.more {
			// The last chunk: done once everything is on Kafka.
			return store(true)
		}
		lastKey = p.lastKey
	}
}

// waitAcked waits until p is acknowledged. Kafka acknowledgements are
// signalled on the tracker's Changed channel, which the stream goroutine
// waits on; the backfiller polls instead of taking them away from it.
func (b *backfiller) waitAcked(ctx context.Context, p *pendingChunk) error {
	ticker := time.NewTicker(2 * time.Millisecond)
	defer ticker.Stop()
	for !p.acked(b.tracker) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
	return nil
}

// readChunk runs steps 1 and 2 of one chunk (see the top of the file); the
// caller hands it over (step 3) or abandons it.
func (b *backfiller) readChunk(ctx context.Context, conn *pgx.Conn, bf *Backfill, target *backfillTarget, lastKey []string, n int64) (*pendingChunk, error) {
	w := &window{
		tag:   fmt.Sprintf("%s:%d:%d:%016x", b.cfg.Slot, bf.ID, n, rand.Uint64()),
		table: target.table,
		done:  make(chan struct{}),
	}
	b.register(w)
	ok := false
	defer func() {
		if !ok {
			b.abandon(w)
		}
	}()

	// 1. Low watermark, and the transactions writing the table right now.
	batch := &pgx.Batch{}
	batch.Queue("SELECT pg_logical_emit_message(false, $1, $2)", watermarkPrefix, w.tag+":low")
	batch.Queue(writersSQL, target.oid)
	br := conn.SendBatch(ctx, batch)
	_, err := br.Exec()
	var writers []string
	if err == nil {
		err = br.QueryRow().Scan(&writers)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("backfill %d chunk %d: low watermark: %w", bf.ID, n, err)
	}
	if err := b.waitForWriters(ctx, conn, target, writers); err != nil {
		return nil, fmt.Errorf("backfill %d chunk %d: %w", bf.ID, n, err)
	}

	// 2. The chunk.
	mark, first, last := b.initialMarks(bf.ID)
	rows, key, more, err := b.read(ctx, conn, bf, target, lastKey, mark)
	if err != nil {
		return nil, fmt.Errorf("backfill %d chunk %d: read %s: %w", bf.ID, n, target.table, err)
	}
	b.mu.Lock()
	w.rows = rows
	if n == 0 {
		w.firstMark = first
	}
	if !more {
		w.lastMark = last
	}
	b.mu.Unlock()
	ok = true
	return &pendingChunk{w: w, n: n, lastKey: key, rows: len(rows), more: more}, nil
}

// handOver writes the chunk's high watermark: the stream emits its rows
// when it gets there (step 3).
func (b *backfiller) handOver(ctx context.Context, conn *pgx.Conn, bf *Backfill, p *pendingChunk) error {
	if _, err := conn.Exec(ctx, "SELECT pg_logical_emit_message(false, $1, $2)", watermarkPrefix, p.w.tag+":high"); err != nil {
		return fmt.Errorf("backfill %d chunk %d: high watermark: %w", bf.ID, p.n, err)
	}
	return nil
}

// writersSQL lists the transactions holding a lock that lets them modify
// the table (or one of its partitions): everything but ACCESS SHARE (reads)
// and ROW SHARE (SELECT FOR UPDATE). pg_partition_tree lists nothing for a
// table that is not partitioned, hence the table itself besides it.
const writersSQL = `SELECT coalesce(array_agg(DISTINCT l.virtualtransaction), '{}') FROM pg_locks l
	WHERE l.locktype = 'relation' AND l.granted AND l.pid IS DISTINCT FROM pg_backend_pid()
	AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND (l.relation = $1::oid OR l.relation IN (SELECT relid FROM pg_partition_tree($1::oid::regclass)))
	AND l.mode NOT IN ('AccessShareLock', 'RowShareLock')`

// waitForWriters waits until the transactions in writers (virtual
// transaction ids from writersSQL, taken after the low watermark) no longer
// hold their locks on the table.
//
// Why: a transaction writes its commit record before it becomes visible to
// new snapshots. One that committed just before the low watermark could
// still be invisible to the chunk's read, and its events, being before the
// low watermark, would not drop its keys from the chunk: the chunk would
// then carry a version older than the stream's. Such a transaction holds
// its lock on the table until after it became visible, so once every
// writer seen after the low watermark is gone, the chunk sees every
// transaction that committed before it. Like CREATE INDEX CONCURRENTLY,
// this waits for long open transactions that wrote the table.
func (b *backfiller) waitForWriters(ctx context.Context, conn *pgx.Conn, target *backfillTarget, writers []string) error {
	started := time.Now()
	delay := 500 * time.Microsecond
	warned := false
	for len(writers) > 0 {
		if err := sleepCtx(ctx, delay); err != nil {
			return err
		}
		delay = min(delay*2, 50*time.Millisecond)
		err := conn.QueryRow(ctx, `SELECT coalesce(array_agg(DISTINCT l.virtualtransaction), '{}') FROM pg_locks l
			WHERE l.locktype = 'relation' AND l.granted AND l.virtualtransaction = ANY($2)
			AND (l.relation = $1::oid OR l.relation IN (SELECT relid FROM pg_partition_tree($1::oid::regclass)))`, target.oid, writers).Scan(&writers)
		if err != nil {
			return fmt.Errorf("wait for writers of %s: %w", target.table, err)
		}
		if !warned && len(writers) > 0 && time.Since(started) > writerWaitWarn {
			b.log.Warn("backfill waits for open transactions that wrote the table", "table", target.table,
				"virtual_transactions", writers, "waited", time.Since(started).Round(time.Second))
			warned = true
		}
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// read reads one chunk in a read-only transaction (the predicate is the
// operator's SQL) and encodes it like the initial snapshot does: values
// come back in text form (the extended protocol with text results) and go
// through the same type registry as the stream's. It returns the rows and
// the text form of the last row's key, and more false when the table has
// no rows after them. A chunk ends early once its rows hold
// CDCSYNC_SNAPSHOT_MAX_CHUNK_BYTES.
func (b *backfiller) read(ctx context.Context, conn *pgx.Conn, bf *Backfill, target *backfillTarget, lastKey []string, mark string) (rows []Change, key []string, more bool, err error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, nil, false, err
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // no-op after commit

	sql, params, oids := target.first, [][]byte(nil), []uint32(nil)
	if lastKey != nil {
		if len(lastKey) != len(target.keyOIDs) {
			return nil, nil, false, fmt.Errorf("stored last key has %d values; the key of %s has %d columns", len(lastKey), target.table, len(target.keyOIDs))
		}
		sql = target.next
		for i, k := range lastKey {
			params = append(params, []byte(k))
			oids = append(oids, target.keyOIDs[i])
		}
	}
	params = append(params, []byte(fmt.Sprint(bf.ChunkSize)))
	oids = append(oids, 20) // int8 LIMIT

	enc := &rowEncoder{types: b.types, source: b.source, mark: mark}
	rows = make([]Change, 0, min(bf.ChunkSize, 16384))
	var keyBuf []byte
	var keyEnds []int
	size, full := 0, false
	res := tx.Conn().PgConn().ExecParams(ctx, sql, params, oids, nil, nil)
	fields := res.FieldDescriptions()
	keyIdx, err := keyColumns(fields, target.table.Key)
	if err != nil {
		res.Close()
		return nil, nil, false, err
	}
	for !full && res.NextRow() {
		values := res.Values()
		ch, err := enc.change(target.table, fields, values)
		if err != nil {
			res.Close()
			return nil, nil, false, fmt.Errorf("%w: %w", errBackfillValue, err)
		}
		rows = append(rows, ch)
		for _, v := range values {
			size += len(v) + 48 // the value, its encoding's slack and Column header
		}
		// The rest of the result is read and dropped by Close: the next
		// chunk starts after the last row kept.
		full = b.cfg.SnapshotMaxBytes > 0 && size >= b.cfg.SnapshotMaxBytes
		// Keep the key's text form of the latest row only; res reuses
		// the value buffers row to row.
		keyBuf, keyEnds = keyBuf[:0], keyEnds[:0]
		for _, i := range keyIdx {
			keyBuf = append(keyBuf, values[i]...)
			keyEnds = append(keyEnds, len(keyBuf))
		}
	}
	if _, err := res.Close(); err != nil {
		return nil, nil, false, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, nil, false, err
	}
	if len(rows) == 0 {
		return rows, nil, false, nil
	}
	key = make([]string, len(keyEnds))
	start := 0
	for i, end := range keyEnds {
		key[i] = string(keyBuf[start:end])
		start = end
	}
	return rows, key, full || len(rows) >= bf.ChunkSize, nil
}

// keyColumns finds the key columns among the result's fields.
func keyColumns(fields []pgconn.FieldDescription, key []string) ([]int, error) {
	if fields == nil {
		return nil, nil // the query failed; Close reports why
	}
	idx := make([]int, len(key))
	for i, k := range key {
		idx[i] = -1
		for j, f := range fields {
			if f.Name == k {
				idx[i] = j
				break
			}
		}
		if idx[i] < 0 {
			return nil, fmt.Errorf("key column %s missing from the chunk", k)
		}
	}
	return idx, nil
}

func (b *backfiller) register(w *window) {
	b.mu.Lock()
	b.windows[w.tag] = w
	b.mu.Unlock()
}

// abandon forgets a window whose rows will not be emitted.
func (b *backfiller) abandon(w *window) {
	w.cancelled.Store(true)
	b.mu.Lock()
	delete(b.windows, w.tag)
	w.rows = nil
	b.mu.Unlock()
}

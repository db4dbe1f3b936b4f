package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cdcsync/cdcsync/config"
)

// Backfill statuses, as stored in <state schema>.backfills.status.
const (
	BackfillPending   = "pending"   // requested; capture has not started it
	BackfillRunning   = "running"   // capture is reading chunks
	BackfillDone      = "done"      // every chunk is on Kafka
	BackfillCancelled = "cancelled" // stopped on request
	BackfillFailed    = "failed"    // stopped by an error (see Error)
)

// Errors of the backfill requests, for errors.Is.
var (
	ErrNoSuchTable      = errors.New("no such table")
	ErrNotPublished     = errors.New("table is not streamed by capture")
	ErrBackfillNotFound = errors.New("no such backfill")
	ErrBackfillFinished = errors.New("backfill already finished")
	ErrBadChunkSize     = errors.New("chunk size must be between 1 and 100000")
	// errBackfillValue: a value could not be encoded; retrying reads
	// the same value again.
	errBackfillValue = errors.New("cannot encode value")
)

// maxChunkSize bounds a chunk: capture holds the rows of up to
// maxPendingChunks+1 chunks in memory.
const maxChunkSize = 100_000

// signalPrefix is the logical message a backfill request writes (in its
// transaction) so that capture, which reads its own slot, notices at once.
const signalPrefix = "cdcsync.signal"

// Backfill is one table's re-snapshot request and its progress.
type Backfill struct {
	ID        int64
	Slot      string // the capture (CDCSYNC_SLOT) that runs it
	Schema    string
	Table     string
	Where     string // predicate; "" for every row
	ChunkSize int
	Status    string
	// LastKey holds the text form of the key of the last row on Kafka
	// (acknowledged), in key-column order; nil before the first chunk.
	LastKey     []string
	ChunksDone  int64
	RowsDone    int64 // rows read and acknowledged (emitted or skipped)
	RowsSkipped int64 // rows left out because the stream carried a newer version
	RowsTotal   int64 // estimate at request time; exact once done
	Error       string
	CreatedAt   time.Time
	StartedAt   *time.Time
	UpdatedAt   time.Time
	FinishedAt  *time.Time
}

// TableName returns "schema.table".
func (b Backfill) TableName() string { return b.Schema + "." + b.Table }

// Finished reports whether the backfill reached a final status.
func (b Backfill) Finished() bool {
	return b.Status == BackfillDone || b.Status == BackfillCancelled || b.Status == BackfillFailed
}

// backfillStore reads and writes <state schema>.backfills.
type backfillStore struct {
	schema string
}

func (s backfillStore) table() string { return pgx.Identifier{s.schema, "backfills"}.Sanitize() }

// ensure creates the schema and table if missing.
func (s backfillStore) ensure(ctx context.Context, conn *pgx.Conn) error {
	return ensureStateTable(ctx, conn, s.schema, "backfills", `(
			id bigserial PRIMARY KEY,
			slot text NOT NULL,
			table_schema text NOT NULL,
			table_name text NOT NULL,
			where_clause text NOT NULL DEFAULT '',
			chunk_size integer NOT NULL CHECK (chunk_size > 0),
			status text NOT NULL DEFAULT 'pending'
				CHECK (status IN ('pending', 'running', 'done', 'cancelled', 'failed')),
			last_key jsonb,
			chunks_done bigint NOT NULL DEFAULT 0,
			rows_done bigint NOT NULL DEFAULT 0,
			rows_skipped bigint NOT NULL DEFAULT 0,
			rows_total bigint,
			error text,
			created_at timestamptz NOT NULL DEFAULT now(),
			started_at timestamptz,
			updated_at timestamptz NOT NULL DEFAULT now(),
			finished_at timestamptz)`)
}

const backfillColumns = `id, slot, table_schema, table_name, where_clause, chunk_size, status, last_key,
	chunks_done, rows_done, rows_skipped, coalesce(rows_total, 0), coalesce(error, ''),
	created_at, started_at, updated_at, finished_at`

func scanBackfill(row pgx.CollectableRow) (Backfill, error) {
	var b Backfill
	var lastKey []byte
	err := row.Scan(&b.ID, &b.Slot, &b.Schema, &b.Table, &b.Where, &b.ChunkSize, &b.Status, &lastKey,
		&b.ChunksDone, &b.RowsDone, &b.RowsSkipped, &b.RowsTotal, &b.Error,
		&b.CreatedAt, &b.StartedAt, &b.UpdatedAt, &b.FinishedAt)
	if err != nil {
		return b, err
	}
	if lastKey != nil {
		if err := json.Unmarshal(lastKey, &b.LastKey); err != nil {
			return b, fmt.Errorf("backfill %d: last_key %s: %w", b.ID, lastKey, err)
		}
	}
	return b, nil
}

// list returns backfills of slot: those in ids (all when ids is empty),
// optionally only those with one of statuses, ordered by id.
func (s backfillStore) list(ctx context.Context, conn *pgx.Conn, slot string, ids []int64, statuses ...string) ([]Backfill, error) {
	sql := "SELECT " + backfillColumns + " FROM " + s.table() +
		` WHERE slot = $1 AND (cardinality($2::bigint[]) = 0 OR id = ANY($2))
		AND (cardinality($3::text[]) = 0 OR status = ANY($3)) ORDER BY id`
	if ids == nil {
		ids = []int64{}
	}
	if statuses == nil {
		statuses = []string{}
	}
	rows, err := conn.Query(ctx, sql, slot, ids, statuses)
	if err != nil {
		return nil, fmt.Errorf("read backfills: %w", err)
	}
	out, err := pgx.CollectRows(rows, scanBackfill)
	if err != nil {
		return nil, fmt.Errorf("read backfills: %w", err)
	}
	return out, nil
}

// markRunning moves a pending or running backfill to running. It reports
// false when the backfill was cancelled (or removed) meanwhile.
func (s backfillStore) markRunning(ctx context.Context, conn *pgx.Conn, id int64) (bool, error) {
	tag, err := conn.Exec(ctx, "UPDATE "+s.table()+` SET status = 'running', started_at = coalesce(started_at, now()),
		updated_at = now() WHERE id = $1 AND status IN ('pending', 'running')`, id)
	if err != nil {
		return false, fmt.Errorf("start backfill %d: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}

// saveProgress records chunks on Kafka. With done, it also finishes the
// backfill (rows_total becomes exact). It reports false when the backfill
// is no longer running (cancelled).
func (s backfillStore) saveProgress(ctx context.Context, conn *pgx.Conn, b *Backfill, done bool) (bool, error) {
	var lastKey []byte
	if b.LastKey != nil {
		var err error
		if lastKey, err = json.Marshal(b.LastKey); err != nil {
			return false, fmt.Errorf("backfill %d: encode last key: %w", b.ID, err)
		}
	}
	sql := "UPDATE " + s.table() + ` SET last_key = $2::text::jsonb, chunks_done = $3, rows_done = $4, rows_skipped = $5,
		updated_at = now() WHERE id = $1 AND status = 'running'`
	if done {
		sql = "UPDATE " + s.table() + ` SET last_key = $2::text::jsonb, chunks_done = $3, rows_done = $4, rows_skipped = $5,
			rows_total = $4, status = 'done', updated_at = now(), finished_at = now() WHERE id = $1 AND status = 'running'`
	}
	var key *string
	if lastKey != nil {
		k := string(lastKey)
		key = &k
	}
	tag, err := conn.Exec(ctx, sql, b.ID, key, b.ChunksDone, b.RowsDone, b.RowsSkipped)
	if err != nil {
		return false, fmt.Errorf("save progress of backfill %d: %w", b.ID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// fail stops a backfill with reason.
func (s backfillStore) fail(ctx context.Context, conn *pgx.Conn, id int64, reason string) error {
	_, err := conn.Exec(ctx, "UPDATE "+s.table()+` SET status = 'failed', error = $2, updated_at = now(), finished_at = now()
		WHERE id = $1 AND status IN ('pending', 'running')`, id, reason)
	if err != nil {
		return fmt.Errorf("mark backfill %d failed: %w", id, err)
	}
	return nil
}

// BackfillRequest asks the capture daemon of a slot to re-read tables.
type BackfillRequest struct {
	Tables    []string // "schema.table"; a bare name means schema public
	Where     string   // predicate over each table's columns; "" for all rows
	ChunkSize int      // rows per chunk; 0 means CDCSYNC_SNAPSHOT_CHUNK_SIZE
}

// RequestBackfill validates req against the source database and records
// one backfill per table for the capture daemon of cfg.Slot, which picks
// them up from its own stream (a logical message written in the same
// transaction) or, at the latest, from its next poll of the table. Nothing
// is recorded unless every table and the predicate pass validation:
// tables must exist, have a primary key (or replica identity index) and be
// in cfg.Publication; the predicate must be one boolean expression
// (ErrBadWhere).
func RequestBackfill(ctx context.Context, conn *pgx.Conn, cfg config.Capture, req BackfillRequest) ([]Backfill, error) {
	chunk := req.ChunkSize
	if chunk == 0 {
		chunk = cfg.SnapshotChunkSize
	}
	if chunk < 1 || chunk > maxChunkSize {
		return nil, fmt.Errorf("%w, got %d", ErrBadChunkSize, chunk)
	}
	targets, err := checkBackfillTables(ctx, conn, cfg, req.Tables, req.Where)
	if err != nil {
		return nil, err
	}
	store := backfillStore{schema: cfg.StateSchema}
	if err := store.ensure(ctx, conn); err != nil {
		return nil, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("record backfill: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // no-op after commit
	ids, err := store.insert(ctx, tx, cfg.Slot, targets, req.Where, chunk)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("record backfill: %w", err)
	}
	return store.list(ctx, conn, cfg.Slot, ids)
}

// backfillTableRequest is a validated table to backfill and its row count
// (an estimate for large tables).
type backfillTableRequest struct {
	t     tableInfo
	total int64
}

// checkBackfillTables validates the tables and the predicate of a request:
// tables must exist, have a key and be in cfg.Publication.
func checkBackfillTables(ctx context.Context, conn *pgx.Conn, cfg config.Capture, tables []string, where string) ([]backfillTableRequest, error) {
	if len(tables) == 0 {
		return nil, fmt.Errorf("%w: no table given", ErrNoSuchTable)
	}
	var targets []backfillTableRequest
	for _, name := range tables {
		t, err := backfillTable(ctx, conn, name)
		if err != nil {
			return nil, err
		}
		var published bool
		err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)`,
			cfg.Publication, t.Schema, t.Name).Scan(&published)
		if err != nil {
			return nil, fmt.Errorf("read publication %s: %w", cfg.Publication, err)
		}
		if !published {
			return nil, fmt.Errorf("%w: %s is not in publication %s (CDCSYNC_PUBLICATION); add it to CDCSYNC_TABLES and restart capture",
				ErrNotPublished, t, cfg.Publication)
		}
		estimate, err := validateWhere(ctx, conn, t, where)
		if err != nil {
			return nil, err
		}
		total := estimate
		if estimate < 1_000_000 {
			// Small enough to count exactly; this also runs the
			// predicate once, so run-time errors show up now.
			n, ok, err := countWhere(ctx, conn, t, where)
			if err != nil {
				return nil, err
			}
			if ok {
				total = n
			}
		}
		targets = append(targets, backfillTableRequest{t, total})
	}
	return targets, nil
}

// insert records one pending backfill per target in tx, with the signal
// that wakes the capture daemon when tx commits, and returns their ids.
func (s backfillStore) insert(ctx context.Context, tx pgx.Tx, slot string, targets []backfillTableRequest, where string, chunk int) ([]int64, error) {
	ids := make([]int64, 0, len(targets))
	for _, tg := range targets {
		var id int64
		err := tx.QueryRow(ctx, "INSERT INTO "+s.table()+` (slot, table_schema, table_name, where_clause, chunk_size, rows_total)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`, slot, tg.t.Schema, tg.t.Name, strings.TrimSpace(where), chunk, tg.total).Scan(&id)
		if err != nil {
			return nil, fmt.Errorf("record backfill of %s: %w", tg.t, err)
		}
		ids = append(ids, id)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_logical_emit_message(true, $1, $2)", signalPrefix, joinIDs(ids)); err != nil {
		return nil, fmt.Errorf("signal capture: %w", err)
	}
	return ids, nil
}

// ListBackfills returns the backfills of cfg.Slot with the given ids (all
// of them when ids is empty), ordered by id. A missing table means none.
func ListBackfills(ctx context.Context, conn *pgx.Conn, cfg config.Capture, ids []int64) ([]Backfill, error) {
	store := backfillStore{schema: cfg.StateSchema}
	out, err := store.list(ctx, conn, cfg.Slot, ids)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.UndefinedTable || pgErr.Code == pgerrcode.InvalidSchemaName) {
		return nil, nil
	}
	return out, err
}

// CancelBackfill stops backfill id of cfg.Slot. Capture notices at its next
// chunk; rows already on Kafka stay there. It fails with ErrBackfillNotFound
// or ErrBackfillFinished (with the final status) when there is nothing to
// cancel.
func CancelBackfill(ctx context.Context, conn *pgx.Conn, cfg config.Capture, id int64) (Backfill, error) {
	store := backfillStore{schema: cfg.StateSchema}
	tag, err := conn.Exec(ctx, "UPDATE "+store.table()+` SET status = 'cancelled', updated_at = now(), finished_at = now()
		WHERE id = $1 AND slot = $2 AND status IN ('pending', 'running')`, id, cfg.Slot)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.UndefinedTable || pgErr.Code == pgerrcode.InvalidSchemaName) {
		return Backfill{}, fmt.Errorf("%w: %d", ErrBackfillNotFound, id)
	}
	if err != nil {
		return Backfill{}, fmt.Errorf("cancel backfill %d: %w", id, err)
	}
	found, err := store.list(ctx, conn, cfg.Slot, []int64{id})
	if err != nil {
		return Backfill{}, err
	}
	if len(found) == 0 {
		return Backfill{}, fmt.Errorf("%w: %d (slot %s)", ErrBackfillNotFound, id, cfg.Slot)
	}
	if tag.RowsAffected() == 0 {
		return found[0], fmt.Errorf("%w: backfill %d is %s", ErrBackfillFinished, id, found[0].Status)
	}
	return found[0], nil
}

// backfillTable looks up a table named by the operator.
func backfillTable(ctx context.Context, conn *pgx.Conn, name string) (tableInfo, error) {
	schema, table := splitTable(strings.TrimSpace(name))
	if schema == "" || table == "" || strings.Contains(table, ".") {
		return tableInfo{}, fmt.Errorf("%w: %q (want schema.table)", ErrNoSuchTable, name)
	}
	t, err := lookupTable(ctx, conn, schema, table)
	switch {
	case errors.Is(err, ErrTableMissing):
		return t, fmt.Errorf("%w: %s", ErrNoSuchTable, t)
	case errors.Is(err, ErrNoKey):
		return t, fmt.Errorf("%w: %s has no primary key or replica identity index to read it in chunks", ErrNoKey, t)
	}
	return t, err
}

func joinIDs(ids []int64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(parts, ",")
}

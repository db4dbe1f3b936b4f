package capture

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cdcsync/cdcsync/pipeline"
)

// rowEncoder turns rows read from a table (values in text form) into op
// "r" change events, encoded like the stream's.
type rowEncoder struct {
	types  *Types
	source SourceInfo
	pos    pipeline.Position
	// mark is source.snapshot of the rows: "true" (empty) for the initial
	// snapshot, "incremental" for other backfills, as Debezium marks
	// them (the window marks an initial snapshot's first and last rows).
	mark string
}

// publishedColumnsSQL lists the columns pgoutput sends for a table, in
// table order: all but dropped and generated ones. (pgoutput leaves
// generated columns out before Postgres 18, and from 18 on unless the
// publication sets publish_generated_columns, which capture's does not.)
const publishedColumnsSQL = `SELECT a.attname FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum`

func (s *rowEncoder) change(t tableInfo, fields []pgconn.FieldDescription, values [][]byte) (Change, error) {
	// One buffer per row: the Columns slice into it and stay valid until
	// the change is produced.
	size := 0
	for _, v := range values {
		size += len(v) + 8
	}
	buf := make([]byte, 0, size)
	row := make(pipeline.Row, len(fields))
	for i, f := range fields {
		start := len(buf)
		if values[i] == nil {
			buf = append(buf, "null"...)
		} else {
			var err error
			buf, err = s.types.AppendJSON(buf, f.DataTypeOID, values[i])
			if err != nil {
				return Change{}, fmt.Errorf("column %s: %w", f.Name, err)
			}
		}
		row[i] = pipeline.Column{Name: f.Name, Value: buf[start:len(buf):len(buf)]}
	}
	key := make(pipeline.Row, 0, len(t.Key))
	for _, k := range t.Key {
		v, _ := row.Get(k)
		key = append(key, pipeline.Column{Name: k, Value: v})
	}
	now := time.Now().UnixMilli()
	ev := &pipeline.Event{
		After: row,
		Source: pipeline.Source{
			Connector: "postgresql", Name: s.source.Name, DB: s.source.DB,
			Schema: t.Schema, Table: t.Name, TsMs: now, Snapshot: cmp.Or(s.mark, "true"),
		},
		Op:   pipeline.OpRead,
		TsMs: now,
	}
	ev.SetPosition(s.pos)
	return Change{Schema: t.Schema, Table: t.Name, Key: key, Event: ev, Position: s.pos}, nil
}

// The initial snapshot is a backfill per captured table (backfill.go): the
// slot is created first and streamed at once, and the existing rows are
// read in key chunks between watermarks while changes flow. Each chunk's
// progress is stored once Kafka has it, so a stopped capture resumes where
// it was and the slot is never dropped for an unfinished snapshot: the
// stream from the slot's start stays continuous, so every change (deletes
// included) of a row read earlier follows it on the topic.
//
// <state schema>.snapshot_tables records, per slot, the tables whose
// existing rows were (or are being) read, with their backfill. The request
// (state row, backfills, these rows) is committed before the slot is
// created, so a capture stopped between the two still snapshots on its next
// start. A captured table without a row here is new and gets its backfill
// at start-up.

type snapshotTables struct {
	schema string
}

func (s snapshotTables) table() string { return pgx.Identifier{s.schema, "snapshot_tables"}.Sanitize() }

func (s snapshotTables) ensure(ctx context.Context, conn *pgx.Conn) error {
	return ensureStateTable(ctx, conn, s.schema, "snapshot_tables", `(
			slot text NOT NULL,
			table_schema text NOT NULL,
			table_name text NOT NULL,
			backfill_id bigint, -- NULL: on Kafka before this table existed (older capture)
			created_at timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (slot, table_schema, table_name))`)
}

// snapshotEntry is a table's row in snapshot_tables with its backfill's
// status ("" without a backfill).
type snapshotEntry struct {
	backfillID *int64
	status     string
}

func (s snapshotTables) list(ctx context.Context, conn *pgx.Conn, backfills backfillStore, slot string) (map[string]snapshotEntry, error) {
	rows, err := conn.Query(ctx, `SELECT s.table_schema || '.' || s.table_name, s.backfill_id, coalesce(b.status, '')
		FROM `+s.table()+` s LEFT JOIN `+backfills.table()+` b ON b.id = s.backfill_id WHERE s.slot = $1`, slot)
	if err != nil {
		return nil, fmt.Errorf("read snapshot tables: %w", err)
	}
	defer rows.Close()
	out := map[string]snapshotEntry{}
	for rows.Next() {
		var name string
		var e snapshotEntry
		if err := rows.Scan(&name, &e.backfillID, &e.status); err != nil {
			return nil, fmt.Errorf("read snapshot tables: %w", err)
		}
		out[name] = e
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read snapshot tables: %w", err)
	}
	return out, nil
}

// initialBackfills are the unfinished backfills of the initial snapshot,
// by id: the table each reads.
type initialBackfills map[int64]string

// planSnapshot records the backfills of the initial snapshot that are due:
// every table when the slot is new (except those whose backfill from an
// interrupted start is still pending), and tables added to CDCSYNC_TABLES
// since. publishedBefore lists the tables that were in the publication
// before this start added any; it tells, for a slot an older capture
// snapshotted, which tables are already on Kafka. It returns the initial
// snapshot's unfinished backfills.
func (c *capturer) planSnapshot(ctx context.Context, conn *pgx.Conn, tables []tableInfo, slotExists bool, publishedBefore map[string]bool) (initialBackfills, error) {
	unfinished := initialBackfills{}
	if c.cfg.Snapshot == "never" {
		return unfinished, nil
	}
	slot := c.cfg.Slot
	state := stateStore{schema: c.cfg.StateSchema}
	backfills := backfillStore{schema: c.cfg.StateSchema}
	registry := snapshotTables{schema: c.cfg.StateSchema}
	for _, ensure := range []func(context.Context, *pgx.Conn) error{backfills.ensure, registry.ensure} {
		if err := ensure(ctx, conn); err != nil {
			return nil, err
		}
	}
	st, err := state.get(ctx, conn, slot)
	if err != nil {
		return nil, err
	}
	done, err := registry.list(ctx, conn, backfills, slot)
	if err != nil {
		return nil, err
	}
	var todo, baseline []tableInfo
	for _, t := range tables {
		e, known := done[t.String()]
		running := e.status == BackfillPending || e.status == BackfillRunning
		if running {
			unfinished[*e.backfillID] = t.String()
		}
		switch {
		case !slotExists:
			// A new slot: read every table, but an interrupted start's
			// backfill that has not run is reused, not doubled.
			if !running {
				todo = append(todo, t)
			}
		case known:
		case len(done) == 0 && !st.exists:
			// A slot created with CDCSYNC_SNAPSHOT=never or by hand:
			// what Kafka has is its stream; keep it so.
			baseline = append(baseline, t)
		case len(done) == 0 && !st.done:
			// An older capture's snapshot died: its exported snapshot
			// is gone; read the rows as a backfill and keep the slot.
			todo = append(todo, t)
		case len(done) == 0 && publishedBefore[t.String()]:
			baseline = append(baseline, t) // snapshotted by an older capture
		default:
			todo = append(todo, t) // added to CDCSYNC_TABLES since
		}
	}
	if len(todo) == 0 && len(baseline) == 0 && st.exists {
		return unfinished, nil
	}
	targets := make([]backfillTableRequest, 0, len(todo))
	if len(todo) > 0 {
		names := make([]string, len(todo))
		for i, t := range todo {
			names[i] = t.String()
		}
		if targets, err = checkBackfillTables(ctx, conn, c.cfg, names, ""); err != nil {
			return nil, fmt.Errorf("initial snapshot: %w", err)
		}
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("record initial snapshot: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // no-op after commit
	var ids []int64
	if len(targets) > 0 {
		if ids, err = backfills.insert(ctx, tx, slot, targets, "", c.cfg.SnapshotChunkSize); err != nil {
			return nil, err
		}
	}
	record := func(t tableInfo, id *int64) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+registry.table()+` (slot, table_schema, table_name, backfill_id) VALUES ($1, $2, $3, $4)
			ON CONFLICT (slot, table_schema, table_name) DO UPDATE SET backfill_id = EXCLUDED.backfill_id, created_at = now()`,
			slot, t.Schema, t.Name, id)
		if err != nil {
			return fmt.Errorf("record snapshot of %s: %w", t, err)
		}
		return nil
	}
	for i, t := range todo {
		if err := record(t, &ids[i]); err != nil {
			return nil, err
		}
		unfinished[ids[i]] = t.String()
	}
	for _, t := range baseline {
		if err := record(t, nil); err != nil {
			return nil, err
		}
	}
	if err := state.setSnapshot(ctx, tx, slot, len(unfinished) == 0); err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("record initial snapshot: %w", err)
	}
	for i, tg := range targets {
		c.log.Info("initial snapshot requested", "table", tg.t.String(), "backfill", ids[i], "rows_estimate", tg.total,
			"chunk_size", c.cfg.SnapshotChunkSize, "new_slot", !slotExists)
	}
	return unfinished, nil
}

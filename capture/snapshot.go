package capture

import (
	"cmp"
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cdcsync/cdcsync/pipeline"
)

// snapshotNameRE matches the names Postgres gives exported snapshots, so
// the name can be used as a literal safely.
var snapshotNameRE = regexp.MustCompile(`^[0-9A-Fa-f-]+$`)

// snapshotter reads existing rows of the captured tables as op "r" events,
// under the snapshot the slot exported, so that streaming from the slot's
// consistent point afterwards leaves no gap and no stale overwrite.
type snapshotter struct {
	conn      *pgx.Conn
	types     *Types
	source    SourceInfo
	tables    []tableInfo
	chunkSize int
	pos       pipeline.Position
	emit      func(context.Context, Change) error
	onRows    func(table string, n int)
	// mark is source.snapshot of the rows: "true" (empty) for the initial
	// snapshot, "incremental" for backfills, as Debezium marks them.
	mark string
	// marks refines the initial snapshot's marks (run only).
	marks snapshotMarks
}

// snapshotMarks marks initial snapshot rows as Debezium does: the very
// first row "first", the very last "last", otherwise a table's first and
// last rows "first_in_data_collection" and "last_in_data_collection", the
// rest "true". It holds one row back, since a row is last only once the
// next one is known not to exist.
type snapshotMarks struct {
	held         *Change
	heldFirst    bool // the held row is its table's first
	heldTableEnd bool // the held row is its table's last
	emitted      bool // a row was emitted already
	nextFirst    bool // the next row starts a table
}

// row emits the held row, if any, and holds ch.
func (m *snapshotMarks) row(ctx context.Context, emit func(context.Context, Change) error, ch Change) error {
	if err := m.flush(ctx, emit, false); err != nil {
		return err
	}
	first := m.nextFirst || !m.emitted
	m.held, m.heldFirst, m.nextFirst = &ch, first, false
	return nil
}

// tableEnd says the held row (if any) is its table's last.
func (m *snapshotMarks) tableEnd() {
	if m.held != nil {
		m.heldTableEnd = true
	}
	m.nextFirst = true
}

// flush emits the held row; last says no row follows at all.
func (m *snapshotMarks) flush(ctx context.Context, emit func(context.Context, Change) error, last bool) error {
	h := m.held
	if h == nil {
		return nil
	}
	mark := "true"
	switch {
	case last:
		mark = "last"
	case !m.emitted:
		mark = "first"
	case m.heldTableEnd:
		mark = "last_in_data_collection"
	case m.heldFirst:
		mark = "first_in_data_collection"
	}
	h.Event.Source.Snapshot = mark
	m.held, m.heldFirst, m.heldTableEnd, m.emitted = nil, false, false, true
	return emit(ctx, *h)
}

// run imports the exported snapshot and emits every row of every table.
func (s *snapshotter) run(ctx context.Context, snapshotName string) error {
	if !snapshotNameRE.MatchString(snapshotName) {
		return fmt.Errorf("unexpected exported snapshot name %q", snapshotName)
	}
	tx, err := s.conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin snapshot transaction: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // read-only; nothing to keep
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+quoteLiteral(snapshotName)); err != nil {
		return fmt.Errorf("import snapshot %s: %w", snapshotName, err)
	}
	for _, t := range s.tables {
		if err := s.table(ctx, tx, t); err != nil {
			return err
		}
		s.marks.tableEnd()
	}
	return s.marks.flush(ctx, s.emit, true)
}

// table reads one table in primary-key order, chunkSize rows at a time,
// through a cursor so memory stays bounded whatever the table's size.
func (s *snapshotter) table(ctx context.Context, tx pgx.Tx, t tableInfo) error {
	keys := make([]string, len(t.Key))
	for i, k := range t.Key {
		keys[i] = pgx.Identifier{k}.Sanitize()
	}
	cols, err := publishedColumns(ctx, tx, t)
	if err != nil {
		return err
	}
	cursor := pgx.Identifier{"cdcsync_snapshot"}.Sanitize()
	decl := "DECLARE " + cursor + " NO SCROLL CURSOR FOR SELECT " + strings.Join(cols, ", ") +
		" FROM " + t.ident() + " ORDER BY " + strings.Join(keys, ", ")
	if _, err := tx.Exec(ctx, decl); err != nil {
		return fmt.Errorf("snapshot %s: declare cursor: %w", t, err)
	}
	fetch := "FETCH " + strconv.Itoa(s.chunkSize) + " FROM " + cursor
	for {
		n, err := s.chunk(ctx, tx, t, fetch)
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", t, err)
		}
		if s.onRows != nil {
			s.onRows(t.String(), n)
		}
		if n < s.chunkSize {
			break
		}
	}
	if _, err := tx.Exec(ctx, "CLOSE "+cursor); err != nil {
		return fmt.Errorf("snapshot %s: close cursor: %w", t, err)
	}
	return nil
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

// publishedColumns returns the quoted names of the columns the stream
// carries for t, so that snapshot rows have exactly the columns streamed
// rows of the same table have (SELECT * would add generated columns).
func publishedColumns(ctx context.Context, tx pgx.Tx, t tableInfo) ([]string, error) {
	rows, err := tx.Query(ctx, publishedColumnsSQL, t.Schema, t.Name)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: list columns: %w", t, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: list columns: %w", t, err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("snapshot %s: no columns to read", t)
	}
	for i, n := range names {
		names[i] = pgx.Identifier{n}.Sanitize()
	}
	return names, nil
}

// chunk fetches and emits one chunk, returning the number of rows. The
// simple protocol returns every value in text form, which is what the
// stream's decoder gets too, so both go through the same encoding.
func (s *snapshotter) chunk(ctx context.Context, tx pgx.Tx, t tableInfo, fetch string) (int, error) {
	rr := tx.Conn().PgConn().Exec(ctx, fetch)
	defer rr.Close()
	n := 0
	for rr.NextResult() {
		res := rr.ResultReader()
		fields := res.FieldDescriptions()
		for res.NextRow() {
			ch, err := s.change(t, fields, res.Values())
			if err != nil {
				return n, err
			}
			if err := s.marks.row(ctx, s.emit, ch); err != nil {
				return n, err
			}
			n++
		}
		if _, err := res.Close(); err != nil {
			return n, fmt.Errorf("fetch: %w", err)
		}
	}
	if err := rr.Close(); err != nil {
		return n, fmt.Errorf("fetch: %w", err)
	}
	return n, nil
}

func (s *snapshotter) change(t tableInfo, fields []pgconn.FieldDescription, values [][]byte) (Change, error) {
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

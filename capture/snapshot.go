package capture

import (
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
	}
	return nil
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
			if err := s.emit(ctx, ch); err != nil {
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
			Schema: t.Schema, Table: t.Name, TsMs: now, Snapshot: "true",
		},
		Op:   pipeline.OpRead,
		TsMs: now,
	}
	ev.SetPosition(s.pos)
	return Change{Schema: t.Schema, Table: t.Name, Key: key, Event: ev, Position: s.pos}, nil
}

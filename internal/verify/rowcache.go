package verify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/capture"
	"github.com/cdcsync/cdcsync/pipeline"
	"github.com/cdcsync/cdcsync/sink"
)

// ErrTableMissing is returned (wrapped) when a table of CDCSYNC_TABLES is
// not in the order database.
var ErrTableMissing = errors.New("table not found in the order database (check CDCSYNC_TABLES)")

// columnsSQL lists the columns capture streams for a table, in table
// order: all but dropped and generated ones (capture's snapshot reads the
// same set).
const columnsSQL = `SELECT a.attname FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum`

// keySQL lists the columns of the key capture uses for a table: what a
// delete's old tuple carries, so the identity index's columns under REPLICA
// IDENTITY USING INDEX, and the primary key otherwise.
const keySQL = `SELECT a.attname FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE n.nspname = $1 AND c.relname = $2 AND CASE WHEN c.relreplident = 'i' THEN i.indisreplident ELSE i.indisprimary END
ORDER BY k.ord`

// cachedRow is what the row cache should hold for one source row.
type cachedRow struct {
	key    string
	pk     pipeline.Row // the key columns as capture encodes them
	fields []string     // column names, table order, NULL columns left out
	values []string
}

// checkRowCache compares the row cache of table with the table's rows:
// each row's hash must hold exactly its non-NULL columns, rendered as the
// redis sink renders them (capture's JSON encoding, then strings as their
// contents and everything else as JSON text), and no hash may exist for a
// row that does not.
//
// At a cut (cut not nil) src holds the cut's snapshot, and a hash that
// differs from its row, or exists without one, is not drift when its
// version says it was changed after the cut.
func (v *Verifier) checkRowCache(ctx context.Context, src *pgx.Conn, table string, cut *cut) (Check, error) {
	c := Check{Name: CheckRowCache, Table: table, Drifts: []Drift{}}
	col := collector{check: &c, max: v.cfg.MaxReport}
	schema, name, _ := strings.Cut(table, ".")

	columns, key, err := tableLayout(ctx, src, schema, name)
	if err != nil {
		return c, fmt.Errorf("row cache %s: %w", table, err)
	}
	types := capture.NewTypes()
	if err := types.LoadTypes(ctx, src); err != nil {
		return c, fmt.Errorf("row cache %s: %w", table, err)
	}

	quoted := make([]string, len(columns))
	for i, n := range columns {
		quoted[i] = pgx.Identifier{n}.Sanitize()
	}
	keyPos := make([]int, len(key))
	order := make([]string, len(key))
	for i, k := range key {
		keyPos[i] = slices.Index(columns, k)
		order[i] = pgx.Identifier{k}.Sanitize()
	}
	query := "SELECT " + strings.Join(quoted, ", ") + " FROM " + pgx.Identifier{schema, name}.Sanitize() +
		" ORDER BY " + strings.Join(order, ", ")

	seen := map[string]struct{}{}
	batch := make([]cachedRow, 0, redisBatch)
	flush := func() error {
		err := v.compareRows(ctx, batch, &col, cut)
		batch = batch[:0]
		return err
	}
	// The simple protocol returns every value in text form, as capture's
	// snapshot reads them, so both encode alike.
	rr := src.PgConn().Exec(ctx, query)
	for rr.NextResult() {
		res := rr.ResultReader()
		fields := res.FieldDescriptions()
		for res.NextRow() {
			row, err := renderRow(types, schema, name, fields, res.Values(), keyPos)
			if err != nil {
				_, _ = res.Close()
				_ = rr.Close()
				return c, fmt.Errorf("row cache %s: %w", table, err)
			}
			seen[row.key] = struct{}{}
			batch = append(batch, row)
			if len(batch) == redisBatch {
				if err := flush(); err != nil {
					_, _ = res.Close()
					_ = rr.Close()
					return c, err
				}
			}
		}
		if _, err := res.Close(); err != nil {
			_ = rr.Close()
			return c, fmt.Errorf("row cache %s: read rows: %w", table, err)
		}
	}
	if err := rr.Close(); err != nil {
		return c, fmt.Errorf("row cache %s: read rows: %w", table, err)
	}
	if err := flush(); err != nil {
		return c, err
	}

	// Hashes of rows that do not exist.
	var extra []string
	err = scanKeys(ctx, v.rdb, sink.RowKeyPattern(schema, name), func(k string) {
		if _, ok := seen[k]; !ok {
			extra = append(extra, k)
		}
	})
	if err != nil {
		return c, fmt.Errorf("row cache %s: scan keys: %w", table, err)
	}
	if cut != nil {
		if extra, err = v.notChangedAfter(ctx, cut, &c, extra); err != nil {
			return c, fmt.Errorf("row cache %s: %w", table, err)
		}
	}
	addUnexpected(&col, extra, nil)
	return c, nil
}

// tableLayout reads a table's streamed columns and its key columns.
func tableLayout(ctx context.Context, conn *pgx.Conn, schema, table string) (columns, key []string, err error) {
	rows, err := conn.Query(ctx, columnsSQL, schema, table)
	if err != nil {
		return nil, nil, fmt.Errorf("list columns: %w", err)
	}
	if columns, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return nil, nil, fmt.Errorf("list columns: %w", err)
	}
	if len(columns) == 0 {
		return nil, nil, ErrTableMissing
	}
	rows, err = conn.Query(ctx, keySQL, schema, table)
	if err != nil {
		return nil, nil, fmt.Errorf("look up key: %w", err)
	}
	if key, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return nil, nil, fmt.Errorf("look up key: %w", err)
	}
	if len(key) == 0 {
		return nil, nil, errors.New("no primary key or replica identity index: capture cannot key its rows")
	}
	return columns, key, nil
}

// renderRow builds a row's cache key and fields from its text values. The
// redis sink stores pipeline.ScalarText of each non-NULL value of an event
// (its scalarText is a faster path to the same result), and capture
// encodes the values with capture.Types.AppendJSON, as done here.
func renderRow(types *capture.Types, schema, table string, fields []pgconn.FieldDescription, values [][]byte, keyPos []int) (cachedRow, error) {
	row := cachedRow{fields: make([]string, 0, len(fields)), values: make([]string, 0, len(fields))}
	enc := make([][]byte, len(fields))
	var buf []byte
	for i, f := range fields {
		if values[i] == nil {
			continue
		}
		var err error
		buf, err = types.AppendJSON(buf[:0], f.DataTypeOID, values[i])
		if err != nil {
			return row, fmt.Errorf("column %s: %w", f.Name, err)
		}
		enc[i] = slices.Clone(buf)
		row.fields = append(row.fields, f.Name)
		row.values = append(row.values, pipeline.ScalarText(enc[i]))
	}
	key := make(pipeline.Row, len(keyPos))
	for i, p := range keyPos {
		v := enc[p]
		if v == nil {
			v = []byte("null")
		}
		key[i] = pipeline.Column{Name: fields[p].Name, Value: v}
	}
	row.key = sink.RowKey(schema, table, key)
	row.pk = key
	return row, nil
}

// compareRows reads the batch's hashes in one pipeline and reports those
// that differ from their rows.
func (v *Verifier) compareRows(ctx context.Context, batch []cachedRow, col *collector, cut *cut) error {
	if len(batch) == 0 {
		return nil
	}
	pipe := v.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(batch))
	// Each row's version is read right after its hash: a hash needs one
	// (without it an older event could overwrite the row), and at a cut a
	// hash changed after the cut has a version after the cut by then.
	versions := make([]*redis.StringCmd, len(batch))
	for i, r := range batch {
		cmds[i] = pipe.HGetAll(ctx, r.key)
		versions[i] = pipe.Get(ctx, sink.VersionKeyOfRow(r.key))
	}
	_, err := pipe.Exec(ctx)
	var replyErr redis.Error
	if err != nil && !errors.As(err, &replyErr) {
		return fmt.Errorf("read row cache: %w", err)
	}
	for i, r := range batch {
		col.check.Compared++
		if cut != nil {
			after, err := changedAfter(cut, versions[i])
			if err != nil {
				return err
			}
			if after {
				if got, _ := cmds[i].Result(); len(got) == 0 || len(rowFields(r, got)) > 0 {
					col.check.AfterCut++
				}
				continue
			}
		}
		got, err := cmds[i].Result()
		if err != nil {
			// A reply error for this key alone, e.g. WRONGTYPE: the key
			// is there but is not the row's hash.
			col.add(Drift{Key: r.key, Problem: Differs, Fields: []Field{{Name: "(type)", Expected: ptr("hash"), Actual: ptr(err.Error())}}})
			continue
		}
		if len(got) == 0 {
			col.add(Drift{Key: r.key, Problem: Missing})
			continue
		}
		f := rowFields(r, got)
		if vf := versionField(versions[i]); vf != nil {
			f = append(f, *vf)
		}
		if len(f) > 0 {
			col.add(Drift{Key: r.key, Problem: Differs, Fields: f})
		}
	}
	return nil
}

// rowFields lists the fields of a cached hash that differ from the row:
// columns in table order, then fields the row does not have.
func rowFields(r cachedRow, got map[string]string) []Field {
	var out []Field
	present := 0
	for i, name := range r.fields {
		g, ok := got[name]
		switch {
		case !ok:
			out = append(out, Field{Name: name, Expected: ptr(r.values[i])})
			continue
		case g != r.values[i]:
			out = append(out, Field{Name: name, Expected: ptr(r.values[i]), Actual: ptr(g)})
		}
		present++
	}
	if len(got) > present {
		var extra []string
		for name := range got {
			if !slices.Contains(r.fields, name) {
				extra = append(extra, name)
			}
		}
		slices.Sort(extra)
		for _, name := range extra {
			out = append(out, Field{Name: name, Actual: ptr(got[name])})
		}
	}
	return out
}

// versionField reports a row's version key that is missing or is not a
// position: the row cache's version check then cannot protect the row.
func versionField(cmd *redis.StringCmd) *Field {
	ver, err := cmd.Result()
	switch {
	case errors.Is(err, redis.Nil):
		return &Field{Name: "(version)", Expected: ptr("the position of the row's last event")}
	case err != nil:
		return &Field{Name: "(version)", Expected: ptr("a position"), Actual: ptr(err.Error())}
	}
	if _, perr := sink.ParsePositionKey(ver); perr != nil {
		return &Field{Name: "(version)", Expected: ptr("a position"), Actual: ptr(ver)}
	}
	return nil
}

package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/capture"
	"github.com/cdcsync/cdcsync/pipeline"
)

// SourceRow is one row of the order database rendered as the pipeline
// carries it: its key as capture encodes Kafka keys, and its non-NULL
// columns as the redis sink caches them.
type SourceRow struct {
	// Key holds the key columns in key order, JSON-encoded as capture
	// writes them into a Kafka record's key.
	Key pipeline.Row
	// CacheKey is the row cache's Redis key.
	CacheKey string
	// Fields and Values are the non-NULL columns in table order, each
	// value rendered as the row cache holds it.
	Fields, Values []string
}

// Map returns the row's cached form as field → value.
func (r *SourceRow) Map() map[string]string {
	m := make(map[string]string, len(r.Fields))
	for i, f := range r.Fields {
		m[f] = r.Values[i]
	}
	return m
}

// ErrKeyColumns is returned (wrapped) when a key given to ReadRow does not
// name exactly the table's key columns.
var ErrKeyColumns = errors.New("key does not name the table's key columns")

// ReadRow reads the row of schema.table whose key columns equal key (a
// JSON object of the key columns, e.g. {"id":42}), the way verify reads
// rows. conn must use capture's session settings (capture.SessionParams).
// It returns the table's key columns, and a nil row when there is none.
func ReadRow(ctx context.Context, conn *pgx.Conn, schema, table string, key map[string]json.RawMessage) ([]string, *SourceRow, error) {
	columns, keyCols, err := tableLayout(ctx, conn, schema, table)
	if err != nil {
		return nil, nil, err
	}
	if len(key) != len(keyCols) {
		return keyCols, nil, fmt.Errorf("%w: want %s", ErrKeyColumns, strings.Join(keyCols, ", "))
	}
	types := capture.NewTypes()
	if err := types.LoadTypes(ctx, conn); err != nil {
		return keyCols, nil, err
	}
	quoted := make([]string, len(columns))
	for i, n := range columns {
		quoted[i] = pgx.Identifier{n}.Sanitize()
	}
	keyPos := make([]int, len(keyCols))
	where := make([]string, len(keyCols))
	params := make([][]byte, len(keyCols))
	for i, k := range keyCols {
		raw, ok := key[k]
		if !ok {
			return keyCols, nil, fmt.Errorf("%w: want %s", ErrKeyColumns, strings.Join(keyCols, ", "))
		}
		if string(raw) == "null" {
			return keyCols, nil, fmt.Errorf("key column %s is null", k)
		}
		keyPos[i] = slices.Index(columns, k)
		// Untyped text parameters: the server reads them as the column's
		// type, so the primary-key index is used.
		where[i] = pgx.Identifier{k}.Sanitize() + " = $" + fmt.Sprint(i+1)
		params[i] = []byte(pipeline.ScalarText(raw))
	}
	query := "SELECT " + strings.Join(quoted, ", ") + " FROM " + pgx.Identifier{schema, table}.Sanitize() +
		" WHERE " + strings.Join(where, " AND ")
	// Text results, as capture's snapshot reads them, so both encode alike.
	res := conn.PgConn().ExecParams(ctx, query, params, nil, nil, nil)
	var row *SourceRow
	for res.NextRow() {
		r, err := renderRow(types, schema, table, res.FieldDescriptions(), res.Values(), keyPos)
		if err != nil {
			_, _ = res.Close()
			return keyCols, nil, err
		}
		row = &SourceRow{Key: r.pk, CacheKey: r.key, Fields: r.fields, Values: r.values}
	}
	if _, err := res.Close(); err != nil {
		return keyCols, nil, fmt.Errorf("read %s.%s row: %w", schema, table, err)
	}
	return keyCols, row, nil
}

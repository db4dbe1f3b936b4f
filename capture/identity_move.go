package capture

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// MovedRowFetcher reads, from the source, the current text values of cols
// in the row of schema.table whose key columns (keyCols, of types keyOIDs)
// have the text values keyVals. found is false when no such row exists
// now; a nil value is NULL.
//
// The decoder calls it for an update that moves a row to a new key while
// TOASTed columns are unchanged: the stream sends neither their values (the
// old tuple carries only the key) nor does any row exist under the new key
// for a consumer to keep them from. See Decoder.SetMovedRowFetcher.
type MovedRowFetcher func(schema, table string, keyCols []string, keyOIDs []uint32, keyVals [][]byte, cols []string) (values [][]byte, found bool, err error)

// movedRows reads moved rows over one lazily opened connection with
// capture's session parameters, so values come out in the text form the
// stream uses.
type movedRows struct {
	connect func(context.Context) (*pgx.Conn, error)
	conn    *pgx.Conn
}

func (r *movedRows) close() {
	if r.conn != nil {
		r.conn.Close(context.Background())
		r.conn = nil
	}
}

// fetcher returns a MovedRowFetcher that runs its queries under ctx (the
// session's: the decoder has no context of its own).
func (r *movedRows) fetcher(ctx context.Context) MovedRowFetcher {
	return func(schema, table string, keyCols []string, keyOIDs []uint32, keyVals [][]byte, cols []string) ([][]byte, bool, error) {
		if r.conn == nil {
			conn, err := r.connect(ctx)
			if err != nil {
				return nil, false, fmt.Errorf("read moved row of %s.%s: %w", schema, table, err)
			}
			r.conn = conn
		}
		var sql strings.Builder
		sql.WriteString("SELECT ")
		for i, c := range cols {
			if i > 0 {
				sql.WriteString(", ")
			}
			sql.WriteString(pgx.Identifier{c}.Sanitize())
		}
		sql.WriteString(" FROM " + pgx.Identifier{schema, table}.Sanitize() + " WHERE ")
		for i, k := range keyCols {
			if i > 0 {
				sql.WriteString(" AND ")
			}
			sql.WriteString(pgx.Identifier{k}.Sanitize() + " = $" + strconv.Itoa(i+1))
		}
		// The key values go as text with the columns' own type OIDs, so
		// Postgres parses them exactly as the stream printed them.
		res := r.conn.PgConn().ExecParams(ctx, sql.String(), keyVals, keyOIDs, nil, nil).Read()
		var pgErr *pgconn.PgError
		if errors.As(res.Err, &pgErr) {
			// The server refused the query: capture is behind and the table
			// or column was since dropped or renamed. Retrying would fail the
			// same way forever; the columns stay unchanged instead.
			return nil, false, nil
		}
		if res.Err != nil {
			r.close() // a broken connection is opened again next time
			return nil, false, fmt.Errorf("read moved row of %s.%s: %w", schema, table, res.Err)
		}
		if len(res.Rows) == 0 {
			return nil, false, nil
		}
		return res.Rows[0], true, nil
	}
}

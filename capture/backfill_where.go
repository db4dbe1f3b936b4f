package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrBadWhere: a backfill's --where predicate is not one boolean expression
// over the table's columns. Checked before a backfill is requested and again
// before capture runs it, so a bad predicate never starts a half-run.
var ErrBadWhere = errors.New("invalid --where predicate")

// The --where predicate is operator-supplied SQL by design (like Debezium's
// additional-conditions): it is placed, in parentheses, into the chunk query
// `... WHERE <key> > <last key> AND (<predicate>) ORDER BY <key> LIMIT n`
// and runs with capture's privileges. checkWhereSyntax makes sure it cannot
// change the shape of that query; validateWhere has Postgres check that it
// is a boolean expression over the table.

// checkWhereSyntax rejects text that could escape the parentheses it is put
// in: a ';', a comment (which would hide the rest of the query), unbalanced
// parentheses, an unterminated quote, or a $n parameter. Quotes (strings,
// E-strings, quoted identifiers, dollar quotes) are skipped as a whole, so
// a ';' inside a string literal is fine.
func checkWhereSyntax(where string) error {
	s := strings.TrimSpace(where)
	if s == "" {
		return fmt.Errorf("%w: it is empty", ErrBadWhere)
	}
	depth := 0
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\'':
			// E'...' strings take backslash escapes; '' doubles a quote
			// in every kind of string.
			escapes := i > 0 && (s[i-1] == 'E' || s[i-1] == 'e') && (i < 2 || !isIdentByte(s[i-2]))
			end, ok := endOfQuoted(s, i, '\'', escapes)
			if !ok {
				return fmt.Errorf("%w: unterminated string literal", ErrBadWhere)
			}
			i = end
		case c == '"':
			end, ok := endOfQuoted(s, i, '"', false)
			if !ok {
				return fmt.Errorf("%w: unterminated quoted identifier", ErrBadWhere)
			}
			i = end
		case c == '$' && (i == 0 || !isIdentByte(s[i-1])):
			if tag, ok := dollarTag(s[i:]); ok {
				end := strings.Index(s[i+len(tag):], tag)
				if end < 0 {
					return fmt.Errorf("%w: unterminated dollar-quoted string %s", ErrBadWhere, tag)
				}
				i += len(tag) + end + len(tag)
				continue
			}
			if i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' {
				return fmt.Errorf("%w: parameters ($1, ...) are not allowed; write the values into the predicate", ErrBadWhere)
			}
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-', c == '/' && i+1 < len(s) && s[i+1] == '*':
			return fmt.Errorf("%w: comments are not allowed", ErrBadWhere)
		case c == ';':
			return fmt.Errorf("%w: ';' is not allowed: give one boolean expression, not statements", ErrBadWhere)
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			if depth < 0 {
				return fmt.Errorf("%w: unbalanced parentheses (a ')' without its '(')", ErrBadWhere)
			}
			i++
		default:
			i++
		}
	}
	if depth != 0 {
		return fmt.Errorf("%w: unbalanced parentheses (%d '(' not closed)", ErrBadWhere, depth)
	}
	return nil
}

// endOfQuoted returns the index just past the quote that closes the quoted
// text starting at s[start] (== q). A doubled quote is an escaped quote.
func endOfQuoted(s string, start int, q byte, backslashEscapes bool) (int, bool) {
	for i := start + 1; i < len(s); i++ {
		switch {
		case backslashEscapes && s[i] == '\\':
			i++ // skip the escaped byte
		case s[i] == q:
			if i+1 < len(s) && s[i+1] == q {
				i++
				continue
			}
			return i + 1, true
		}
	}
	return 0, false
}

// dollarTag returns the opening "$tag$" (or "$$") of a dollar-quoted string
// at the start of s.
func dollarTag(s string) (string, bool) {
	for j := 1; j < len(s); j++ {
		c := s[j]
		switch {
		case c == '$':
			return s[:j+1], true
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80:
		case c >= '0' && c <= '9' && j > 1:
		default:
			return "", false
		}
	}
	return "", false
}

// isIdentByte reports whether c can continue an unquoted identifier (which
// may contain '$'), so that "x$1" or "E" inside a name is not taken for a
// parameter or an E-string prefix.
func isIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

// whereClause returns " AND (<where>)" or "" for no predicate.
func whereClause(where string) string {
	if strings.TrimSpace(where) == "" {
		return ""
	}
	return " AND (" + where + ")"
}

// validateWhere checks where (may be empty) against table t by planning
// `SELECT 1 FROM t WHERE (where)` inside a read-only transaction that is
// rolled back: Postgres reports unknown columns, type errors and a
// non-boolean predicate without running anything. It returns the planner's
// row estimate. Problems with the predicate are ErrBadWhere.
func validateWhere(ctx context.Context, conn *pgx.Conn, t tableInfo, where string) (estimate int64, err error) {
	if strings.TrimSpace(where) != "" {
		if err := checkWhereSyntax(where); err != nil {
			return 0, err
		}
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, fmt.Errorf("validate --where: begin: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // read-only; rolled back on purpose
	sql := "EXPLAIN (FORMAT JSON) SELECT 1 FROM " + t.ident() + " WHERE true" + whereClause(where)
	var plan string
	if err := tx.QueryRow(ctx, sql).Scan(&plan); err != nil {
		return 0, whereErr(t, err)
	}
	return planRows(plan), nil
}

// countWhere counts the rows a backfill will read, when that is cheap
// enough to be worth it (statement_timeout bounds it). ok is false when
// the count took too long; other errors mean the predicate fails at run
// time (division by zero, a bad cast) and are ErrBadWhere.
func countWhere(ctx context.Context, conn *pgx.Conn, t tableInfo, where string) (n int64, ok bool, err error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, false, fmt.Errorf("count rows: begin: %w", err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // read-only; rolled back on purpose
	if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = '10s'"); err != nil {
		return 0, false, fmt.Errorf("count rows: %w", err)
	}
	err = tx.QueryRow(ctx, "SELECT count(*) FROM "+t.ident()+" WHERE true"+whereClause(where)).Scan(&n)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.QueryCanceled {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, whereErr(t, err)
	}
	return n, true, nil
}

// whereErr turns a Postgres error about the predicate into ErrBadWhere with
// Postgres' message; other errors (a lost connection) pass through.
func whereErr(t tableInfo, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || transientPgError(pgErr) {
		return fmt.Errorf("validate --where on %s: %w", t, err)
	}
	msg := pgErr.Message
	if pgErr.Hint != "" {
		msg += " (" + pgErr.Hint + ")"
	}
	return fmt.Errorf("%w for %s: %s", ErrBadWhere, t, msg)
}

// transientPgError reports errors a retry may fix: connection problems,
// shutdowns, resource shortages, serialization failures.
func transientPgError(pgErr *pgconn.PgError) bool {
	switch pgErr.Code[:2] {
	case "08", "40", "53", "57", "58":
		return pgErr.Code != pgerrcode.QueryCanceled
	}
	return false
}

// planRows reads the top plan node's row estimate from EXPLAIN (FORMAT
// JSON) output; 0 when it cannot be read.
func planRows(plan string) int64 {
	var out []struct {
		Plan struct {
			Rows float64 `json:"Plan Rows"`
		} `json:"Plan"`
	}
	if err := json.Unmarshal([]byte(plan), &out); err != nil || len(out) == 0 {
		return 0
	}
	return int64(out[0].Plan.Rows)
}

package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// typesTable is a table with a column of every type capture maps
// (pgTestColumns), plus the enum and domains some of them use, and the SQL
// that says what capture must make of each column. It is shared by the
// decoder's pgoutput test and the end-to-end test through the daemon.
type typesTable struct {
	ctx  context.Context
	t    *testing.T
	conn *pgx.Conn
	name string // unqualified, in schema public
	// ident is the quoted schema-qualified name, for SQL.
	ident string
	// columns are the table's columns as expectRow reads them; a test that
	// alters the table updates them.
	columns []pgColumn
}

// typesConn connects to db with capture's session parameters, so that the
// expectations computed through it (timestamptz in UTC in particular) are
// in the form capture produces.
func typesConn(ctx context.Context, t *testing.T, url string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range SessionParams() {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// createTypesTable creates the enum, the domains, a composite type and the
// table in conn's database, under random names. The table has
// pgTestColumns and then extra; in column types, {mood}, {posint}, {amount}
// and {pair} name the enum, the domains and the composite (a int, b text).
func createTypesTable(ctx context.Context, t *testing.T, conn *pgx.Conn, extra ...pgColumn) *typesTable {
	t.Helper()
	tt := &typesTable{ctx: ctx, t: t, conn: conn, name: testenv.RandomName("orders")}
	tt.columns = append(slices.Clip(pgTestColumns), extra...)
	tt.ident = pgx.Identifier{"public", tt.name}.Sanitize()
	mood := pgx.Identifier{testenv.RandomName("mood")}.Sanitize()
	posint := pgx.Identifier{testenv.RandomName("posint")}.Sanitize()
	amount := pgx.Identifier{testenv.RandomName("amount")}.Sanitize()
	pair := pgx.Identifier{testenv.RandomName("pair")}.Sanitize()
	tt.exec("CREATE TYPE " + mood + ` AS ENUM ('happy', 'sad', 'o''dd "q"')`)
	tt.exec("CREATE DOMAIN " + posint + " AS integer CHECK (VALUE > 0)")
	tt.exec("CREATE DOMAIN " + amount + " AS numeric(12,2)")
	tt.exec("CREATE TYPE " + pair + " AS (a integer, b text)")
	names := strings.NewReplacer("{mood}", mood, "{posint}", posint, "{amount}", amount, "{pair}", pair)
	var defs []string
	for _, c := range tt.columns {
		typ := names.Replace(c.typ)
		defs = append(defs, pgx.Identifier{c.name}.Sanitize()+" "+typ)
	}
	tt.exec("CREATE TABLE " + tt.ident + " (" + strings.Join(defs, ", ") + ")")
	// Out of line whatever the compression: see pgTestRows' "big".
	tt.exec("ALTER TABLE " + tt.ident + " ALTER COLUMN big SET STORAGE EXTERNAL")
	return tt
}

func (tt *typesTable) exec(sql string, args ...any) {
	tt.t.Helper()
	if _, err := tt.conn.Exec(tt.ctx, sql, args...); err != nil {
		tt.t.Fatalf("%s: %v", sql, err)
	}
}

// insert inserts one row given as column -> SQL value expression (the form
// of pgTestRows); missing columns are NULL.
func (tt *typesTable) insert(row map[string]string) {
	tt.t.Helper()
	var cols, values []string
	for _, c := range tt.columns {
		if v, ok := row[c.name]; ok {
			cols = append(cols, pgx.Identifier{c.name}.Sanitize())
			values = append(values, v)
		}
	}
	tt.exec("INSERT INTO " + tt.ident + " (" + strings.Join(cols, ", ") + ") VALUES (" + strings.Join(values, ", ") + ")")
}

// expectRow returns, for every column of row id as it is now, the JSON
// capture must produce, computed by SQL independently of capture's code.
func (tt *typesTable) expectRow(id int) map[string]json.RawMessage {
	tt.t.Helper()
	var exprs []string
	for _, c := range tt.columns {
		exprs = append(exprs, fmt.Sprintf(c.expect, pgx.Identifier{c.name}.Sanitize()))
	}
	var out string
	q := "SELECT json_build_array(" + strings.Join(exprs, ", ") + ")::text FROM " + tt.ident + " WHERE id = $1"
	if err := tt.conn.QueryRow(tt.ctx, q, id).Scan(&out); err != nil {
		tt.t.Fatalf("expected values of row %d: %v", id, err)
	}
	var vals []json.RawMessage
	if err := json.Unmarshal([]byte(out), &vals); err != nil {
		tt.t.Fatalf("expected values of row %d: %v", id, err)
	}
	m := map[string]json.RawMessage{}
	for i, c := range tt.columns {
		v := vals[i]
		if c.utcZ {
			v = bytes.ReplaceAll(v, []byte(`+00:00"`), []byte(`Z"`))
		}
		m[c.name] = v
	}
	return m
}

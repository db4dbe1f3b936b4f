package debezium

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// columnsSQL lists the columns pgoutput and the snapshot send for a table,
// in table order (generated columns are not sent).
const columnsSQL = `SELECT a.attname, a.atttypid, a.atttypmod, a.attnotnull,
	coalesce(pg_catalog.pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%', false)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum`

// typesSQL describes types by OID: domains name their base type and
// typmod, arrays their element type, enums their labels in sort order.
const typesSQL = `SELECT t.oid, t.typname, t.typtype::text, t.typbasetype, t.typtypmod,
	CASE WHEN t.typelem <> 0 AND t.typlen = -1 THEN t.typelem ELSE 0 END,
	coalesce((SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid), '{}')
FROM pg_catalog.pg_type t WHERE t.oid = ANY($1)`

type catalogType struct {
	name    string
	typtype string
	base    uint32
	typmod  int32
	elem    uint32
	labels  []string
}

// LoadTable reads a table's columns and their types from the catalog of
// conn's database; key names the primary-key columns in key order.
func LoadTable(ctx context.Context, conn *pgx.Conn, schemaName, table string, key []string) (Table, error) {
	t := Table{Schema: schemaName, Name: table, Key: key}
	rows, err := conn.Query(ctx, columnsSQL, schemaName, table)
	if err != nil {
		return t, fmt.Errorf("load columns of %s.%s: %w", schemaName, table, err)
	}
	type rawCol struct {
		name    string
		oid     uint32
		typmod  int32
		notNull bool
		serial  bool
	}
	var cols []rawCol
	for rows.Next() {
		var c rawCol
		if err := rows.Scan(&c.name, &c.oid, &c.typmod, &c.notNull, &c.serial); err != nil {
			rows.Close()
			return t, fmt.Errorf("load columns of %s.%s: %w", schemaName, table, err)
		}
		cols = append(cols, c)
	}
	if err := rows.Err(); err != nil {
		return t, fmt.Errorf("load columns of %s.%s: %w", schemaName, table, err)
	}
	if len(cols) == 0 {
		return t, fmt.Errorf("load columns of %s.%s: no such table", schemaName, table)
	}

	// Read the types and, level by level, the types they refer to.
	types := map[uint32]catalogType{}
	want := make([]uint32, 0, len(cols))
	for _, c := range cols {
		want = append(want, c.oid)
	}
	for depth := 0; len(want) > 0 && depth < 8; depth++ {
		next, err := loadTypes(ctx, conn, want, types)
		if err != nil {
			return t, fmt.Errorf("load types of %s.%s: %w", schemaName, table, err)
		}
		want = next
	}
	for _, c := range cols {
		t.Columns = append(t.Columns, Column{Name: c.name, Type: resolve(types, c.oid, c.typmod, 0), Optional: !c.notNull, Serial: c.serial})
	}
	return t, nil
}

// loadTypes adds the types of oids to types and returns the OIDs they
// refer to that are still unknown.
func loadTypes(ctx context.Context, conn *pgx.Conn, oids []uint32, types map[uint32]catalogType) ([]uint32, error) {
	var ask []uint32
	for _, o := range oids {
		if _, ok := types[o]; !ok && o != 0 {
			ask = append(ask, o)
		}
	}
	if len(ask) == 0 {
		return nil, nil
	}
	rows, err := conn.Query(ctx, typesSQL, ask)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var next []uint32
	for rows.Next() {
		var oid uint32
		var ct catalogType
		if err := rows.Scan(&oid, &ct.name, &ct.typtype, &ct.base, &ct.typmod, &ct.elem, &ct.labels); err != nil {
			return nil, err
		}
		types[oid] = ct
		for _, ref := range []uint32{ct.base, ct.elem} {
			if _, ok := types[ref]; !ok && ref != 0 {
				next = append(next, ref)
			}
		}
	}
	return next, rows.Err()
}

// resolve makes the Type of oid: a domain becomes its base type (with the
// domain's typmod unless the column has its own), an array gets its
// element type.
func resolve(types map[uint32]catalogType, oid uint32, typmod int32, depth int) Type {
	ct, ok := types[oid]
	if !ok || depth > 16 {
		return Type{OID: oid, TypMod: typmod}
	}
	if ct.typtype == "d" {
		if typmod < 0 {
			typmod = ct.typmod
		}
		return resolve(types, ct.base, typmod, depth+1)
	}
	t := Type{OID: oid, Name: ct.name, TypMod: typmod}
	if ct.typtype == "e" {
		t.Enum = ct.labels
	}
	if ct.elem != 0 {
		e := resolve(types, ct.elem, typmod, depth+1)
		t.Elem = &e
	}
	return t
}

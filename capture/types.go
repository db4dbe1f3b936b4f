package capture

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// firstNormalOID is Postgres' FirstNormalObjectId: OIDs below it belong to
// the built-in catalog, OIDs at or above it to user objects and extensions.
const firstNormalOID = 16384

// Types maps type OIDs to how their text form becomes JSON. Built-in types
// are known from the start; user types (enums, domains, arrays of them,
// composites, extension types) are learnt from pgoutput Type messages
// (AddType) and, exactly, from the catalog (LoadTypes). Unknown types are
// encoded as JSON strings holding their text, which loses nothing.
//
// A Types is safe for concurrent use: readers never lock (the user types
// are an immutable map swapped on change), so the snapshot and the stream
// may share one.
type Types struct {
	builtin map[uint32]*typeInfo // read-only after NewTypes
	text    *typeInfo            // the fallback: a JSON string
	mu      sync.Mutex           // serialises writers of user
	user    atomic.Pointer[userTypes]
}

// userTypes is one immutable version of the user-type registry. gen grows
// with every change so that decoders know to re-resolve their columns.
type userTypes struct {
	gen   uint64
	byOID map[uint32]userType
}

type userType struct {
	namespace, name string
	info            *typeInfo
	// exact is set for types read from the catalog; those are never
	// replaced by guesses made from Type messages.
	exact bool
}

// NewTypes returns a registry that knows the built-in types.
func NewTypes() *Types {
	t := &Types{builtin: builtinTypes(), text: &typeInfo{kind: kindText}}
	t.user.Store(&userTypes{byOID: map[uint32]userType{}})
	return t
}

// scalarKind is the encoding of a built-in scalar type.
func scalarKind(oid uint32) kind {
	switch oid {
	case pgtype.BoolOID:
		return kindBool
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID,
		pgtype.XIDOID, pgtype.CIDOID, pgtype.XID8OID:
		return kindInt
	case pgtype.Float4OID, pgtype.Float8OID:
		return kindFloat
	case pgtype.TimestamptzOID:
		return kindTimestamptz
	case pgtype.TimestampOID:
		return kindTimestamp
	case pgtype.ByteaOID:
		return kindBytea
	}
	return kindText
}

// builtinTypes builds the encodings of the built-in types that are not plain
// strings: the scalars of scalarKind and every array type pgx knows, with
// its element type and delimiter taken from pgx's type map.
func builtinTypes() map[uint32]*typeInfo {
	scalars := map[kind]*typeInfo{}
	scalar := func(oid uint32) *typeInfo {
		k := scalarKind(oid)
		ti := scalars[k]
		if ti == nil {
			ti = &typeInfo{kind: k}
			scalars[k] = ti
		}
		return ti
	}
	m := map[uint32]*typeInfo{}
	tm := pgtype.NewMap()
	// pgtype.Map has no way to list its types, so walk the built-in OID
	// range once; this is a few hundred microseconds per registry.
	for oid := uint32(1); oid < firstNormalOID; oid++ {
		if k := scalarKind(oid); k != kindText {
			m[oid] = scalar(oid)
			continue
		}
		typ, ok := tm.TypeForOID(oid)
		if !ok {
			continue
		}
		if ac, ok := typ.Codec.(*pgtype.ArrayCodec); ok && ac.ElementType != nil {
			delim := ac.Delimiter
			if delim == 0 {
				delim = ','
			}
			m[oid] = &typeInfo{kind: kindArray, delim: delim, elem: scalar(ac.ElementType.OID)}
		}
	}
	return m
}

// lookup returns the encoding of oid; unknown types are strings.
func (t *Types) lookup(oid uint32) *typeInfo {
	if ti, ok := t.builtin[oid]; ok {
		return ti
	}
	if ut, ok := t.user.Load().byOID[oid]; ok {
		return ut.info
	}
	return t.text
}

// TypeName names oid for errors and logs: the catalog name of a built-in
// type (int4, text[] as _text), schema.name of a user type, or "oid N".
func (t *Types) TypeName(oid uint32) string {
	if ut, ok := t.user.Load().byOID[oid]; ok {
		return ut.namespace + "." + ut.name
	}
	if typ, ok := pgtype.NewMap().TypeForOID(oid); ok {
		return typ.Name
	}
	return fmt.Sprintf("oid %d", oid)
}

// Known reports whether the encoding of oid is exact: a built-in type or
// one read from the catalog by LoadTypes, not a guess from a Type message.
// Capture can call LoadTypes when a Type message names a type that is not
// Known (one created after start-up); the decoder picks up the result for
// the next tuple.
func (t *Types) Known(oid uint32) bool {
	if _, ok := t.builtin[oid]; ok || oid < firstNormalOID {
		return true
	}
	ut, ok := t.user.Load().byOID[oid]
	return ok && ut.exact
}

// generation changes whenever a user type is added or changed.
func (t *Types) generation() uint64 { return t.user.Load().gen }

// AppendJSON appends the JSON encoding of one non-NULL value, given in
// Postgres' text output format (as produced under SessionParams), to buf.
// See kind for the mapping; arrays become JSON arrays of their elements
// and domains encode as their base type.
func (t *Types) AppendJSON(buf []byte, oid uint32, text []byte) ([]byte, error) {
	out, err := appendValue(buf, t.lookup(oid), text)
	if err != nil {
		return buf, fmt.Errorf("type %s: %w", t.TypeName(oid), err)
	}
	return out, nil
}

// AddType registers a user type announced by a pgoutput Type message. The
// message carries only the name, so unless the catalog already told us
// (LoadTypes), the type is taken for a string, or, when its name starts
// with '_' as Postgres names array types, for an array whose elements are
// encoded like the type named without the underscore (strings if unknown);
// should such a value turn out not to be an array it is kept as a string.
// It reports whether the type was already known exactly; if not, calling
// LoadTypes gives exact encodings (enum arrays and domains in particular).
func (t *Types) AddType(oid uint32, namespace, name string) (exact bool) {
	if _, ok := t.builtin[oid]; ok || oid < firstNormalOID {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.user.Load()
	if ut, ok := cur.byOID[oid]; ok && (ut.exact || (ut.namespace == namespace && ut.name == name)) {
		return ut.exact
	}
	info := t.text
	if elemName, ok := strings.CutPrefix(name, "_"); ok {
		elem := t.text
		for _, ut := range cur.byOID {
			if ut.namespace == namespace && ut.name == elemName {
				elem = ut.info
				break
			}
		}
		info = &typeInfo{kind: kindArray, delim: ',', elem: elem, guessed: true}
	}
	next := &userTypes{gen: cur.gen + 1, byOID: make(map[uint32]userType, len(cur.byOID)+1)}
	for k, v := range cur.byOID {
		next.byOID[k] = v
	}
	next.byOID[oid] = userType{namespace: namespace, name: name, info: info}
	t.user.Store(next)
	return false
}

// catalogType is one row of the LoadTypes query.
type catalogType struct {
	oid             uint32
	namespace, name string
	typtype         byte
	elem, base      uint32
	isArray         bool
	elemDelim       byte
}

// loadTypesSQL reads every user-defined type and every array type (some
// built-in arrays, of money or regclass for instance, are unknown to pgx).
// An array is a varlena type with an element type; fixed-length types
// with typelem (point, name) are not arrays in the text format.
const loadTypesSQL = `SELECT t.oid, n.nspname, t.typname, t.typtype::text, t.typelem, t.typbasetype,
	t.typelem <> 0 AND t.typlen = -1, coalesce(e.typdelim::text, ',')
FROM pg_catalog.pg_type t
JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem
WHERE t.oid >= $1 OR (t.typelem <> 0 AND t.typlen = -1)`

// LoadTypes reads the user-defined types from the catalog of conn's
// database: domains encode as their base type, arrays as JSON arrays of
// their element type, enums, composites, ranges and extension types as
// strings. Call it at start-up and again when AddType reports a type it
// only guessed; changes take effect for the next decoded tuple.
func (t *Types) LoadTypes(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, loadTypesSQL, uint32(firstNormalOID))
	if err != nil {
		return fmt.Errorf("load types: %w", err)
	}
	catalog := map[uint32]catalogType{}
	for rows.Next() {
		var c catalogType
		var typtype, delim string
		if err := rows.Scan(&c.oid, &c.namespace, &c.name, &typtype, &c.elem, &c.base, &c.isArray, &delim); err != nil {
			rows.Close()
			return fmt.Errorf("load types: scan: %w", err)
		}
		c.typtype, c.elemDelim = typtype[0], delim[0]
		catalog[c.oid] = c
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load types: %w", err)
	}

	resolved := map[uint32]*typeInfo{}
	var resolve func(oid uint32, depth int) *typeInfo
	resolve = func(oid uint32, depth int) *typeInfo {
		if ti, ok := t.builtin[oid]; ok {
			return ti
		}
		if ti, ok := resolved[oid]; ok {
			return ti
		}
		c, ok := catalog[oid]
		if !ok || depth > 32 { // depth guards against a corrupt catalog
			return t.text
		}
		ti := t.text
		switch {
		case c.typtype == 'd':
			ti = resolve(c.base, depth+1)
		case c.isArray:
			ti = &typeInfo{kind: kindArray, delim: c.elemDelim, elem: resolve(c.elem, depth+1)}
		}
		resolved[oid] = ti
		return ti
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.user.Load()
	next := &userTypes{gen: cur.gen + 1, byOID: make(map[uint32]userType, len(catalog)+len(cur.byOID))}
	for k, v := range cur.byOID {
		next.byOID[k] = v // types no longer in the catalog keep their entry
	}
	for oid, c := range catalog {
		if _, ok := t.builtin[oid]; ok {
			continue
		}
		next.byOID[oid] = userType{namespace: c.namespace, name: c.name, info: resolve(oid, 0), exact: true}
	}
	t.user.Store(next)
	return nil
}

package debezium

import (
	"strconv"
	"strings"
)

// Built-in type OIDs the encoding distinguishes.
const (
	oidBool        = 16
	oidBytea       = 17
	oidChar        = 18
	oidName        = 19
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidOID         = 26
	oidJSON        = 114
	oidXML         = 142
	oidPoint       = 600
	oidFloat4      = 700
	oidFloat8      = 701
	oidMoney       = 790
	oidMacaddr     = 829
	oidInet        = 869
	oidCidr        = 650
	oidMacaddr8    = 774
	oidBpchar      = 1042
	oidVarchar     = 1043
	oidDate        = 1082
	oidTime        = 1083
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidInterval    = 1186
	oidTimetz      = 1266
	oidBit         = 1560
	oidVarbit      = 1562
	oidNumeric     = 1700
	oidUUID        = 2950
	oidTsvector    = 3614
	oidJSONB       = 3802
	oidInt4range   = 3904
	oidNumrange    = 3906
	oidTsrange     = 3908
	oidTstzrange   = 3910
	oidDaterange   = 3912
	oidInt8range   = 3926
)

// Type is a column type as the catalog describes it, domains resolved to
// their base type.
type Type struct {
	OID    uint32
	Name   string // pg_type.typname of the base type (extension types are recognised by it)
	TypMod int32  // of the base type: the column's, or the domain's
	Enum   []string
	Elem   *Type // element type of an array
}

// Column is one column of a captured table.
type Column struct {
	Name     string
	Type     Type
	Optional bool // not NOT NULL
	// Serial: the column's default is a sequence (serial, bigserial).
	// Debezium cannot evaluate it and gives a NOT NULL integer column the
	// schema default 0 (AbstractRecordsProducerTest's ss, bs and pk).
	Serial bool
}

// Table is a captured table as the encoder needs it.
type Table struct {
	Schema, Name string
	Columns      []Column
	Key          []string // primary-key columns in key order
}

// kind is how a value is converted.
type kind uint8

const (
	kPass        kind = iota // the cdcsync JSON value as it is (numbers, booleans, strings)
	kFloat32                 // real
	kFloat64                 // double precision
	kDecimal                 // numeric with a declared scale, precise mode
	kVarDecimal              // numeric without scale, precise mode
	kDecimalStr              // numeric, string mode
	kDecimalDbl              // numeric, double mode
	kMoney                   // money, precise mode
	kMoneyStr                // money, string mode
	kMoneyDbl                // money, double mode
	kDate                    // days since the epoch
	kTimeMillis              // time as int32 milliseconds
	kTimeMicros              // time as int64 microseconds
	kTimetz                  // ZonedTime string
	kTsMillis                // timestamp as epoch milliseconds
	kTsMicros                // timestamp as epoch microseconds
	kTimestamptz             // ZonedTimestamp string
	kIntervalUs              // MicroDuration
	kIntervalStr             // Interval ISO string
	kBytes                   // bytea (cdcsync base64 in) in the binary mode
	kBitBool                 // bit(1)
	kBits                    // bit(n)/varbit: little-endian bytes
	kHstoreJSON              // hstore as a JSON text string
	kHstoreMap               // hstore as a map
	kPoint                   // geometry Point struct
	kTextBytes               // unknown type: its text as bytes, in the binary mode
	kArray
	kOmit // Debezium has no schema for it and leaves the column out
)

// plan is how one column (or array element) is encoded.
type plan struct {
	name   string
	schema *schema
	kind   kind
	scale  int
	width  int // fraction digits of timestamptz
	elem   *plan
	holder placeholderKind
}

type placeholderKind uint8

const (
	holdNone placeholderKind = iota
	holdString
	holdBytes
	holdStringList
	holdIntList
	holdHstoreJSON // {placeholder: placeholder} as JSON text
	holdHstoreMap  // {placeholder: placeholder} as a map
)

// typePrecision is the fractional-second precision of a time type's
// typmod; -1 (none declared) is 6.
func typePrecision(typmod int32) int {
	if typmod < 0 {
		return 6
	}
	return int(typmod)
}

// numericPrecisionScale splits numeric's typmod; ok is false for a
// numeric without declared precision.
func numericPrecisionScale(typmod int32) (precision, scale int, ok bool) {
	if typmod < 4 {
		return 0, 0, false
	}
	m := typmod - 4
	return int(m>>16) & 0xffff, int(m) & 0xffff, true
}

// planColumn decides the schema and conversion of a column of type t.
func (c *Config) planColumn(name string, t Type, optional bool) *plan {
	p := c.planType(t)
	if p.kind == kOmit {
		return p
	}
	s := *p.schema
	s.optional = optional
	p.schema = &s
	p.name = name
	return p
}

// planTableColumn is planColumn for a table's column, with its default.
func (c *Config) planTableColumn(col Column) *plan {
	p := c.planColumn(col.Name, col.Type, col.Optional)
	if p.kind != kOmit && col.Serial && !col.Optional && col.Type.Elem == nil &&
		(col.Type.OID == oidInt2 || col.Type.OID == oidInt4 || col.Type.OID == oidInt8) {
		p.schema.dflt = "0"
	}
	return p
}

func (c *Config) planType(t Type) *plan {
	named := func(typ, name string) *schema { return &schema{typ: typ, name: name, version: 1} }
	binary := func() (*schema, kind) {
		if c.BinaryHandling == "bytes" {
			return prim("bytes", false), kBytes
		}
		return prim("string", false), kBytes
	}
	if t.Elem != nil {
		switch t.Elem.OID {
		case oidMoney, oidName, oidInterval, oidVarbit, oidXML, oidPoint:
			// Debezium has no array schema for these (DBZ-459).
			return &plan{kind: kOmit}
		}
		ep := c.planType(*t.Elem)
		if ep.kind == kOmit || ep.kind == kArray {
			return &plan{kind: kOmit}
		}
		es := *ep.schema
		es.optional = true
		ep.schema = &es
		return &plan{schema: &schema{typ: "array", items: &es}, kind: kArray, elem: ep, holder: arrayHolder(t.Elem.OID)}
	}
	if len(t.Enum) > 0 {
		return &plan{schema: &schema{typ: "string", name: nameEnum, version: 1,
			params: [][2]string{{"allowed", strings.Join(t.Enum, ",")}}}, kind: kPass, holder: holdString}
	}
	switch t.OID {
	case oidBool:
		return &plan{schema: prim("boolean", false), kind: kPass}
	case oidInt2:
		return &plan{schema: prim("int16", false), kind: kPass}
	case oidInt4:
		return &plan{schema: prim("int32", false), kind: kPass}
	case oidInt8, oidOID:
		return &plan{schema: prim("int64", false), kind: kPass}
	case oidFloat4:
		return &plan{schema: prim("float", false), kind: kFloat32}
	case oidFloat8:
		return &plan{schema: prim("double", false), kind: kFloat64}
	case oidNumeric:
		precision, scale, fixed := numericPrecisionScale(t.TypMod)
		switch c.DecimalHandling {
		case "string":
			return &plan{schema: prim("string", false), kind: kDecimalStr, holder: holdString}
		case "double":
			return &plan{schema: prim("double", false), kind: kDecimalDbl}
		}
		if !fixed {
			return &plan{schema: &schema{typ: "struct", name: nameVarDecimal, version: 1, doc: "Variable scaled decimal",
				fields: []field{{"scale", prim("int32", false)}, {"value", prim("bytes", false)}}}, kind: kVarDecimal}
		}
		return &plan{schema: &schema{typ: "bytes", name: nameDecimal, version: 1, params: [][2]string{
			{"scale", strconv.Itoa(scale)}, {"connect.decimal.precision", strconv.Itoa(precision)}}},
			kind: kDecimal, scale: scale}
	case oidMoney:
		switch c.DecimalHandling {
		case "string":
			return &plan{schema: prim("string", false), kind: kMoneyStr, holder: holdString}
		case "double":
			return &plan{schema: prim("double", false), kind: kMoneyDbl}
		}
		return &plan{schema: &schema{typ: "bytes", name: nameDecimal, version: 1,
			params: [][2]string{{"scale", strconv.Itoa(moneyFractionDigits)}}}, kind: kMoney, scale: moneyFractionDigits}
	case oidText, oidVarchar, oidBpchar, oidChar, oidName, oidInet, oidCidr, oidMacaddr, oidMacaddr8,
		oidInt4range, oidNumrange, oidInt8range, oidTsrange, oidTstzrange, oidDaterange:
		return &plan{schema: prim("string", false), kind: kPass, holder: holdString}
	case oidJSON, oidJSONB:
		return &plan{schema: named("string", nameJSON), kind: kPass, holder: holdString}
	case oidXML:
		return &plan{schema: named("string", nameXML), kind: kPass, holder: holdString}
	case oidUUID:
		return &plan{schema: named("string", nameUUID), kind: kPass, holder: holdString}
	case oidTsvector:
		return &plan{schema: named("string", nameTsVector), kind: kPass, holder: holdString}
	case oidDate:
		if c.TimePrecision == "connect" {
			return &plan{schema: named("int32", nameConnectDate), kind: kDate}
		}
		return &plan{schema: named("int32", nameDate), kind: kDate}
	case oidTime:
		switch {
		case c.TimePrecision == "connect":
			return &plan{schema: named("int32", nameConnectTime), kind: kTimeMillis}
		case c.TimePrecision == "adaptive" && typePrecision(t.TypMod) <= 3:
			return &plan{schema: named("int32", nameTime), kind: kTimeMillis}
		}
		return &plan{schema: named("int64", nameMicroTime), kind: kTimeMicros}
	case oidTimetz:
		return &plan{schema: named("string", nameZonedTime), kind: kTimetz, holder: holdString}
	case oidTimestamp:
		switch {
		case c.TimePrecision == "connect":
			return &plan{schema: named("int64", nameConnectTs), kind: kTsMillis}
		case typePrecision(t.TypMod) <= 3:
			return &plan{schema: named("int64", nameTimestamp), kind: kTsMillis}
		}
		return &plan{schema: named("int64", nameMicroTimestamp), kind: kTsMicros}
	case oidTimestamptz:
		return &plan{schema: named("string", nameZonedTimestamp), kind: kTimestamptz, width: typePrecision(t.TypMod), holder: holdString}
	case oidInterval:
		if c.IntervalHandling == "string" {
			return &plan{schema: named("string", nameInterval), kind: kIntervalStr, holder: holdString}
		}
		return &plan{schema: named("int64", nameMicroDuration), kind: kIntervalUs}
	case oidBytea:
		s, k := binary()
		h := holdBytes
		if s.typ == "string" {
			h = holdString
		}
		return &plan{schema: s, kind: k, holder: h}
	case oidBit, oidVarbit:
		length := int(t.TypMod)
		if t.OID == oidVarbit && t.TypMod < 0 {
			length = 2147483647 // Integer.MAX_VALUE: unlimited
		}
		if length <= 1 {
			return &plan{schema: prim("boolean", false), kind: kBitBool}
		}
		return &plan{schema: &schema{typ: "bytes", name: nameBits, version: 1,
			params: [][2]string{{"length", strconv.Itoa(length)}}}, kind: kBits}
	case oidPoint:
		return &plan{schema: &schema{typ: "struct", name: namePoint, version: 1, doc: "Geometry (POINT)", fields: []field{
			{"x", prim("double", false)}, {"y", prim("double", false)},
			{"wkb", prim("bytes", true)}, {"srid", prim("int32", true)}}}, kind: kPoint}
	}
	switch t.Name {
	case "hstore":
		if c.HstoreHandling == "map" {
			return &plan{schema: &schema{typ: "map", keys: prim("string", false), values: prim("string", true)}, kind: kHstoreMap, holder: holdHstoreMap}
		}
		return &plan{schema: named("string", nameJSON), kind: kHstoreJSON, holder: holdHstoreJSON}
	case "ltree":
		return &plan{schema: named("string", nameLtree), kind: kPass, holder: holdString}
	case "citext", "isbn", "isbn13", "ismn", "issn", "ean13", "upc":
		return &plan{schema: prim("string", false), kind: kPass, holder: holdString}
	}
	// Any other type (box, circle, composites, pg_lsn…) is what Debezium
	// calls an unknown data type; with include.unknown.datatypes it is its
	// text as bytes, which is what cdcsync keeps rather than dropping data.
	s, _ := binary()
	h := holdBytes
	if s.typ == "string" {
		h = holdString
	}
	return &plan{schema: s, kind: kTextBytes, holder: h}
}

// arrayHolder is the placeholder Debezium puts in an unchanged TOASTed
// array column of element type elem (UnchangedToastedReplicationMessageColumn).
func arrayHolder(elem uint32) placeholderKind {
	switch elem {
	case oidText, oidVarchar, oidJSON, oidJSONB:
		return holdStringList
	case oidInt4, oidDate, oidInt8:
		return holdIntList
	}
	return holdNone
}

// moneyFractionDigits is Debezium's money.fraction.digits default.
const moneyFractionDigits = 2

// Package debezium encodes change events the way Debezium's PostgreSQL
// connector writes them through Kafka Connect's JsonConverter, and decodes
// such records back into cdcsync's event model for the sinks.
//
// The encoder works from cdcsync's own lossless JSON values (pipeline.Row)
// plus the column types read from the catalog, so capture's default path is
// untouched: it builds the same events, and only the last step, turning an
// event into key and value bytes, differs.
package debezium

import (
	"strconv"
)

// schema is a Kafka Connect schema, written the way JsonConverter's
// asJsonSchema writes it: type, then fields/items/keys+values, optional,
// name, version, doc, parameters, default, and for a struct member its
// field name last.
type schema struct {
	typ      string // boolean, int16, int32, int64, float, double, string, bytes, array, map, struct
	optional bool
	name     string
	version  int // 0: none
	doc      string
	params   [][2]string // in insertion order (Connect keeps a LinkedHashMap)
	dflt     string      // raw JSON of the default value; empty: none
	fields   []field
	items    *schema
	keys     *schema
	values   *schema
}

type field struct {
	name   string
	schema *schema
}

// appendJSON appends s as JsonConverter's schema JSON; fieldName, when not
// empty, is appended as the "field" member of a struct's field entry.
func (s *schema) appendJSON(buf []byte, fieldName string) []byte {
	buf = append(buf, `{"type":`...)
	buf = appendJacksonString(buf, s.typ)
	switch s.typ {
	case "struct":
		buf = append(buf, `,"fields":[`...)
		for i, f := range s.fields {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = f.schema.appendJSON(buf, f.name)
		}
		buf = append(buf, ']')
	case "array":
		buf = append(buf, `,"items":`...)
		buf = s.items.appendJSON(buf, "")
	case "map":
		buf = append(buf, `,"keys":`...)
		buf = s.keys.appendJSON(buf, "")
		buf = append(buf, `,"values":`...)
		buf = s.values.appendJSON(buf, "")
	}
	buf = append(buf, `,"optional":`...)
	buf = strconv.AppendBool(buf, s.optional)
	if s.name != "" {
		buf = append(buf, `,"name":`...)
		buf = appendJacksonString(buf, s.name)
	}
	if s.version != 0 {
		buf = append(buf, `,"version":`...)
		buf = strconv.AppendInt(buf, int64(s.version), 10)
	}
	if s.doc != "" {
		buf = append(buf, `,"doc":`...)
		buf = appendJacksonString(buf, s.doc)
	}
	if len(s.params) > 0 {
		buf = append(buf, `,"parameters":{`...)
		for i, p := range s.params {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendJacksonString(buf, p[0])
			buf = append(buf, ':')
			buf = appendJacksonString(buf, p[1])
		}
		buf = append(buf, '}')
	}
	if s.dflt != "" {
		buf = append(buf, `,"default":`...)
		buf = append(buf, s.dflt...)
	}
	if fieldName != "" {
		buf = append(buf, `,"field":`...)
		buf = appendJacksonString(buf, fieldName)
	}
	return append(buf, '}')
}

func prim(typ string, optional bool) *schema { return &schema{typ: typ, optional: optional} }

// Debezium's and Kafka Connect's logical type names.
const (
	nameDecimal        = "org.apache.kafka.connect.data.Decimal"
	nameConnectDate    = "org.apache.kafka.connect.data.Date"
	nameConnectTime    = "org.apache.kafka.connect.data.Time"
	nameConnectTs      = "org.apache.kafka.connect.data.Timestamp"
	nameVarDecimal     = "io.debezium.data.VariableScaleDecimal"
	nameDate           = "io.debezium.time.Date"
	nameTime           = "io.debezium.time.Time"
	nameMicroTime      = "io.debezium.time.MicroTime"
	nameTimestamp      = "io.debezium.time.Timestamp"
	nameMicroTimestamp = "io.debezium.time.MicroTimestamp"
	nameZonedTimestamp = "io.debezium.time.ZonedTimestamp"
	nameZonedTime      = "io.debezium.time.ZonedTime"
	nameMicroDuration  = "io.debezium.time.MicroDuration"
	nameInterval       = "io.debezium.time.Interval"
	nameJSON           = "io.debezium.data.Json"
	nameXML            = "io.debezium.data.Xml"
	nameUUID           = "io.debezium.data.Uuid"
	nameEnum           = "io.debezium.data.Enum"
	nameBits           = "io.debezium.data.Bits"
	nameTsVector       = "io.debezium.data.TsVector"
	nameLtree          = "io.debezium.data.Ltree"
	namePoint          = "io.debezium.data.geometry.Point"
	nameSource         = "io.debezium.connector.postgresql.Source"
	nameTxBlock        = "event.block"
	nameTxKey          = "io.debezium.connector.common.TransactionMetadataKey"
	nameTxValue        = "io.debezium.connector.common.TransactionMetadataValue"
	nameTxCollection   = "event.collection"
)

// snapshotAllowed is the allowed list of source.snapshot (SnapshotRecord's
// values in lower case, in declaration order).
const snapshotAllowed = "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"

// sourceSchema is io.debezium.connector.postgresql.Source as Debezium 3.1
// declares it (SourceInfoTest.schemaIsCorrect).
func sourceSchema() *schema {
	return &schema{typ: "struct", name: nameSource, version: 1, fields: []field{
		{"version", prim("string", false)},
		{"connector", prim("string", false)},
		{"name", prim("string", false)},
		{"ts_ms", prim("int64", false)},
		{"snapshot", &schema{typ: "string", optional: true, name: nameEnum, version: 1,
			params: [][2]string{{"allowed", snapshotAllowed}}, dflt: `"false"`}},
		{"db", prim("string", false)},
		{"sequence", prim("string", true)},
		{"ts_us", prim("int64", true)},
		{"ts_ns", prim("int64", true)},
		{"schema", prim("string", false)},
		{"table", prim("string", false)},
		{"txId", prim("int64", true)},
		{"lsn", prim("int64", true)},
		{"xmin", prim("int64", true)},
	}}
}

// txBlockSchema is the envelope's optional transaction block.
func txBlockSchema() *schema {
	return &schema{typ: "struct", optional: true, name: nameTxBlock, version: 1, fields: []field{
		{"id", prim("string", false)},
		{"total_order", prim("int64", false)},
		{"data_collection_order", prim("int64", false)},
	}}
}

// envelopeSchema is <prefix>.<schema>.<table>.Envelope around value.
func envelopeSchema(base string, value *schema) *schema {
	return &schema{typ: "struct", name: base + ".Envelope", version: 2, fields: []field{
		{"before", value},
		{"after", value},
		{"source", sourceSchema()},
		{"transaction", txBlockSchema()},
		{"op", prim("string", false)},
		{"ts_ms", prim("int64", true)},
		{"ts_us", prim("int64", true)},
		{"ts_ns", prim("int64", true)},
	}}
}

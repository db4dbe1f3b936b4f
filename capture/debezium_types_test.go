package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// dbzColumn is one column of the Debezium golden table: its SQL type and
// value (as Debezium's own tests insert it) and, per mode run, the payload
// value Debezium writes for it. want["A"] holds for every run that has no
// entry of its own. src names the Debezium test the values come from.
type dbzColumn struct {
	name, typ, value string
	want             map[string]string
	src              string
}

// dbzRuns are the mode combinations, each a capture of its own on the same
// table; together they take every value of every mode.
var dbzRuns = map[string]config.Encoding{
	"A": {Encoding: "debezium", SchemasEnable: true, DecimalHandling: "precise", TimePrecision: "adaptive",
		IntervalHandling: "numeric", BinaryHandling: "bytes", HstoreHandling: "json", UnavailablePlaceholder: "__debezium_unavailable_value"},
	"B": {Encoding: "debezium", SchemasEnable: true, DecimalHandling: "string", TimePrecision: "adaptive_time_microseconds",
		IntervalHandling: "string", BinaryHandling: "hex", HstoreHandling: "map", UnavailablePlaceholder: "__debezium_unavailable_value"},
	"C": {Encoding: "debezium", SchemasEnable: true, DecimalHandling: "double", TimePrecision: "connect",
		IntervalHandling: "numeric", BinaryHandling: "base64", HstoreHandling: "json", UnavailablePlaceholder: "<unavailable>"},
	"D": {Encoding: "debezium", SchemasEnable: false, DecimalHandling: "precise", TimePrecision: "adaptive",
		IntervalHandling: "numeric", BinaryHandling: "base64-url-safe", HstoreHandling: "json", UnavailablePlaceholder: "__debezium_unavailable_value"},
}

func w(a string, more ...string) map[string]string {
	m := map[string]string{"A": a}
	for i := 0; i+1 < len(more); i += 2 {
		m[more[i]] = more[i+1]
	}
	return m
}

const (
	srcNumeric  = "AbstractRecordsProducerTest.schemasAndValuesForNumericType"
	srcDecimal  = "AbstractRecordsProducerTest.schemasAndValuesFor{BigDecimal,String,Double}EncodedNumericTypes"
	srcDecInf   = "AbstractRecordsProducerTest.schemasAndValuesForStringEncodedNumericTypesWithInfinity"
	srcMoney    = "AbstractRecordsProducerTest.schemaAndValuesFor{,Negative}MoneyTypes"
	srcBin      = "AbstractRecordsProducerTest.schemaAndValuesForBinTypes, schemaAndValueForBytea{Hex,Base64,Base64UrlSafe}"
	srcTime     = "AbstractRecordsProducerTest.schemaAndValuesForDateTimeTypes{,AdaptiveTimeMicroseconds}, schemaAndValuesForIntervalAsString"
	srcStrings  = "AbstractRecordsProducerTest.schemasAndValuesFor{String,Text}Types"
	srcNet      = "AbstractRecordsProducerTest.schemasAndValueFor{NetworkAddress,CidrAddress,Macaddr}Type(s), schemaAndValueForMacaddr8Type"
	srcRanges   = "AbstractRecordsProducerTest.schemaAndValuesForRangeTypes"
	srcGeom     = "AbstractRecordsProducerTest.schemaAndValuesForGeomTypes"
	srcArrays   = "AbstractRecordsProducerTest.schemasAndValuesForArrayTypes"
	srcHstore   = "AbstractRecordsProducerTest.schemaAndValueFieldFor{Json,Map}EncodedHStoreType*"
	srcDomains  = "AbstractRecordsProducerTest.schemasAndValuesForDomainAliasTypes"
	srcCustom   = "AbstractRecordsProducerTest.schemasAndValuesForCustomTypes"
	srcEnum     = "PostgresValueConverter: an enum is io.debezium.data.Enum with its labels as \"allowed\""
	srcTsvector = "PostgresValueConverter: TSVECTOR_OID is io.debezium.data.TsVector, the value as Postgres prints it"
)

var dbzColumns = []dbzColumn{
	{"si", "smallint", "1", w("1"), srcNumeric},
	{"i", "integer", "123456", w("123456"), srcNumeric},
	{"bi", "bigint", "1234567890123", w("1234567890123"), srcNumeric},
	{"r", "real", "3.3", w("3.3"), srcNumeric},
	{"db", "double precision", "4.44", w("4.44"), srcNumeric},
	{"r_int", "real", "3", w("3.0"), srcNumeric},
	{"db_int", "double precision", "4", w("4.0"), srcNumeric},
	{"r_nan", "real", "'NaN'", w(`"NaN"`), srcNumeric},
	{"db_pinf", "double precision", "'Infinity'", w(`"Infinity"`), srcNumeric},
	{"db_ninf", "double precision", "'-Infinity'", w(`"-Infinity"`), srcNumeric},
	{"b", "boolean", "true", w("true"), srcNumeric},
	{"o", "oid", "4000000000", w("4000000000"), srcNumeric},
	{"ss", "smallserial", "1", w("1"), srcNumeric},
	{"bs_serial", "bigserial", "123", w("123"), srcNumeric + " (bs)"},

	{"d", "numeric(3,2)", "1.1", w(`"bg=="`, "B", `"1.10"`, "C", "1.1"), srcDecimal},
	{"dzs", "numeric(4)", "10.11", w(`"Cg=="`, "B", `"10"`, "C", "10.0"), srcDecimal},
	{"dvs", "numeric", "10.1111", w(`{"scale":4,"value":"AYr3"}`, "B", `"10.1111"`, "C", "10.1111"), srcDecimal},
	{"d_nn", "numeric(3,2) NOT NULL", "3.30", w(`"AUo="`, "B", `"3.30"`, "C", "3.3"), srcDecimal},
	{"n", "numeric(6,4)", "22.22", w(`"A2P4"`, "B", `"22.2200"`, "C", "22.22"), srcDecimal},
	{"nzs", "numeric(4)", "22.2", w(`"Fg=="`, "B", `"22"`, "C", "22.0"), srcDecimal},
	{"nvs", "numeric", "22.2222", w(`{"scale":4,"value":"A2QO"}`, "B", `"22.2222"`, "C", "22.2222"), srcDecimal},
	{"dvs_int", "numeric", "10", w(`{"scale":0,"value":"Cg=="}`, "B", `"10"`, "C", "10.0"), srcDecimal},
	{"n_int", "numeric(6,4)", "22", w(`"A1tg"`, "B", `"22.0000"`, "C", "22.0"), srcDecimal},
	{"d_nan", "numeric(3,2)", "'NaN'", w("null", "B", `"NAN"`, "C", `"NaN"`), srcDecimal},
	{"dvs_pinf", "numeric", "'Infinity'", w("null", "B", `"POSITIVE_INFINITY"`, "C", `"Infinity"`), srcDecInf},
	{"nvs_ninf", "numeric", "'-Infinity'", w("null", "B", `"NEGATIVE_INFINITY"`, "C", `"-Infinity"`), srcDecInf},

	{"csh", "money", "'$1234.11'", w(`"AeIT"`, "B", `"1234.11"`, "C", "1234.11"), srcMoney},
	{"csh_neg", "money", "'($1234.11)'", w(`"/h3t"`, "B", `"-1234.11"`, "C", "-1234.11"), srcMoney},

	{"ba", "bytea", `E'\\001\\002\\003'::bytea`, w(`"AQID"`, "B", `"010203"`), srcBin},
	{"bol", "bit(1)", "'0'", w("false"), srcBin},
	{"bol2", "bit", "'1'", w("true"), srcBin},
	{"bs", "bit(2)", "'11'", w(`"Aw=="`), srcBin},
	{"bs7", "bit(7)", "'1'::bit(7)", w(`"QA=="`), srcBin},
	{"bv", "bit varying(2)", "'00'", w(`""`), srcBin},
	{"bv2", "bit varying(24)", "'000000110000001000000001'", w(`"AQID"`), srcBin},
	{"bvl", "bit varying(64)", "'1000000000000000000000000000000000000000000000000000000000000000'", w(`"AAAAAAAAAIA="`), srcBin},
	{"bvunlimited1", "bit varying", "'101'", w(`"BQ=="`), srcBin},
	{"bvunlimited2", "bit varying", "'111011010001000110000001000000001'", w(`"AQIj2gE="`), srcBin},

	{"ts", "timestamp", "'2016-11-04T13:51:30.123456'::timestamp", w("1478267490123456", "C", "1478267490123"), srcTime},
	{"tsneg", "timestamp(6) without time zone", "'1936-10-25T22:10:12.608'::timestamp", w("-1047174587392000", "C", "-1047174587392"), srcTime},
	{"ts_ms", "timestamp(3)", "'2016-11-04T13:51:30.123456'::timestamp", w("1478267490123"), srcTime},
	{"tz", "timestamptz", "'2016-11-04T13:51:30.123456+02:00'::timestamptz", w(`"2016-11-04T11:51:30.123456Z"`), srcTime},
	{"date", "date", "'2016-11-04'::date", w("17109"), srcTime},
	{"ti", "time", "'13:51:30'::time", w("49890000000", "C", "49890000"), srcTime},
	{"tip", "time(3)", "'13:51:30.123'::time", w("49890123", "B", "49890123000"), srcTime},
	{"ttf", "time", "'24:00:00'::time", w("86400000000", "C", "86400000"), srcTime},
	{"ttz", "time with time zone", "'13:51:30.123789+02:00'::timetz", w(`"11:51:30.123789Z"`), srcTime},
	{"tptz", "time(3) with time zone", "'13:51:30.123+02:00'::timetz", w(`"11:51:30.123Z"`), srcTime},
	{"it", "interval", "'P1Y2M3DT4H5M6.78S'::interval", w("37091106780000", "B", `"P1Y2M3DT4H5M6.78S"`), srcTime},
	{"ts_large", "timestamp", "'21016-11-04T13:51:30.123456'::timestamp", w("601060312290123456", "C", "601060312290123"), srcTime},
	{"ts_large_ms", "timestamp(3)", "'21016-11-04T13:51:30.124'::timestamp", w("601060312290124"), srcTime},
	{"tz_large", "timestamptz", "'21016-11-04T13:51:30.123456+07:00'::timestamptz", w(`"+21016-11-04T06:51:30.123456Z"`), srcTime},
	{"ts_max", "timestamp(6)", "'294247-01-01T23:59:59.999999'::timestamp", w("9223371331199999999", "C", "9223371331199999"), srcTime},
	{"tz_max", "timestamptz", "'294247-01-01T23:59:59.999999+00:00'::timestamptz", w(`"+294247-01-01T23:59:59.999999Z"`), srcTime},
	{"tz_min", "timestamptz", "'4714-12-31T23:59:59.999999Z BC'::timestamptz", w(`"-4713-12-31T23:59:59.999999Z"`), srcTime + " (tz_min, streaming form)"},
	{"ts_pinf", "timestamp(6)", "'infinity'::timestamp", w("9223372036825200000"), srcTime},
	{"ts_ninf", "timestamp(6)", "'-infinity'::timestamp", w("-9223372036832400000"), srcTime},
	{"tz_pinf", "timestamptz", "'infinity'::timestamptz", w(`"infinity"`), srcTime},
	{"tz_ninf", "timestamptz", "'-infinity'::timestamptz", w(`"-infinity"`), srcTime},
	{"tz_zero", "timestamp with time zone", "'21016-11-04T13:51:30.000000+07:00'::timestamptz", w(`"+21016-11-04T06:51:30.000000Z"`), srcTime},

	{"vc", "varchar(2)", "'žš'", w(`"žš"`), srcStrings},
	{"ch", "character(4)", "'cdef'", w(`"cdef"`), srcStrings},
	{"t", "text", "'some text'", w(`"some text"`), srcStrings},
	{"bnn", "bytea NOT NULL", `E'\\003\\004\\005'::bytea`, w(`"AwQF"`, "B", `"030405"`), srcStrings},
	{"j", "json", `'{"bar": "baz"}'`, w(`"{\"bar\": \"baz\"}"`), srcStrings},
	{"jb", "jsonb", `'{"bar": "baz"}'`, w(`"{\"bar\": \"baz\"}"`), srcStrings},
	{"x", "xml", "'<foo>bar</foo><foo>bar</foo>'", w(`"<foo>bar</foo><foo>bar</foo>"`), srcStrings},
	{"u", "uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", w(`"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`), srcStrings},
	{"inet", "inet", "'192.168.2.0/12'", w(`"192.168.2.0/12"`), srcNet},
	{"cidr", "cidr", "'192.168.100.128/25'", w(`"192.168.100.128/25"`), srcNet},
	{"mac", "macaddr", "'08:00:2b:01:02:03'", w(`"08:00:2b:01:02:03"`), srcNet},
	{"mac8", "macaddr8", "'08:00:2b:01:02:03:04:05'", w(`"08:00:2b:01:02:03:04:05"`), srcNet},
	{"tsr", "tsrange", "'[2019-03-31 15:30:00, infinity)'", w(`"[\"2019-03-31 15:30:00\",infinity)"`), srcRanges},
	{"tsr2", "tsrange", "'[2019-03-31 15:30:00, 2019-04-30 15:30:00]'", w(`"[\"2019-03-31 15:30:00\",\"2019-04-30 15:30:00\"]"`), srcRanges},
	{"tstzr", "tstzrange", "'[2017-06-05 11:29:12.549426+00,)'", w(`"[\"2017-06-05 11:29:12.549426+00\",)"`), srcRanges + " (system time zone UTC)"},
	{"dr", "daterange", "'[2019-03-31, infinity)'", w(`"[2019-03-31,infinity)"`), srcRanges},
	{"i4r", "int4range", "'[1000,6000)'", w(`"[1000,6000)"`), srcRanges},
	{"nr", "numrange", "'[5.3,6.3)'", w(`"[5.3,6.3)"`), srcRanges},
	{"i8r", "int8range", "'[1000000,6000000)'", w(`"[1000000,6000000)"`), srcRanges},
	{"p", "point", "'(1,1)'", w(`{"x":1.0,"y":1.0,"wkb":"AQEAAAAAAAAAAADwPwAAAAAAAPA/","srid":null}`), srcGeom},

	{"int_array", "int[]", "'{1,2,3}'", w("[1,2,3]"), srcArrays},
	{"bigint_array", "bigint[]", "'{1550166368505037572}'", w("[1550166368505037572]"), srcArrays},
	{"text_array", "text[]", `'{"one","two","three"}'`, w(`["one","two","three"]`), srcArrays},
	{"char_array", "char(10)[]", `'{"cone","ctwo","cthree"}'`, w(`["cone      ","ctwo      ","cthree    "]`), srcArrays},
	{"varchar_array", "varchar(10)[]", `'{"vcone","vctwo","vcthree"}'`, w(`["vcone","vctwo","vcthree"]`), srcArrays},
	{"date_array", "date[]", "'{2016-11-04,2016-11-05,2016-11-06}'", w("[17109,17110,17111]"), srcArrays},
	{"numeric_array", "numeric(10,2)[]", "'{1.2,3.4,5.6}'", w(`["eA==","AVQ=","AjA="]`, "B", `["1.20","3.40","5.60"]`, "C", "[1.2,3.4,5.6]"), srcArrays},
	{"varnumeric_array", "numeric[]", "'{1.1,2.22,3.333}'",
		w(`[{"scale":1,"value":"Cw=="},{"scale":2,"value":"AN4="},{"scale":3,"value":"DQU="}]`, "B", `["1.1","2.22","3.333"]`, "C", "[1.1,2.22,3.333]"), srcArrays},
	{"inet_array", "inet[]", `'{"192.168.2.0/12","192.168.1.1","192.168.0.2/1"}'`, w(`["192.168.2.0/12","192.168.1.1","192.168.0.2/1"]`), srcArrays},
	{"cidr_array", "cidr[]", `'{"192.168.100.128/25", "192.168.0.0/25", "192.168.1.0/24"}'`, w(`["192.168.100.128/25","192.168.0.0/25","192.168.1.0/24"]`), srcArrays},
	{"macaddr_array", "macaddr[]", `'{"08:00:2b:01:02:03", "08-00-2b-01-02-03", "08002b:010203"}'`, w(`["08:00:2b:01:02:03","08:00:2b:01:02:03","08:00:2b:01:02:03"]`), srcArrays},
	{"tsrange_array", "tsrange[]", `'{"[2019-03-31 15:30:00, infinity)", "[2019-03-31 15:30:00, 2019-04-30 15:30:00]"}'`,
		w(`["[\"2019-03-31 15:30:00\",infinity)","[\"2019-03-31 15:30:00\",\"2019-04-30 15:30:00\"]"]`), srcArrays},
	{"daterange_array", "daterange[]", `'{"[2019-03-31, infinity)", "[2019-03-31, 2019-04-30)"}'`, w(`["[2019-03-31,infinity)","[2019-03-31,2019-04-30)"]`), srcArrays},
	{"int4range_array", "int4range[]", `'{"[1,6)", "[1,4)"}'`, w(`["[1,6)","[1,4)"]`), srcArrays},
	{"numerange_array", "numrange[]", `'{"[5.3,6.3)", "[10.0,20.0)"}'`, w(`["[5.3,6.3)","[10.0,20.0)"]`), srcArrays},
	{"uuid_array", "uuid[]", `'{"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "f0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}'`,
		w(`["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","f0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]`), srcArrays},
	{"json_array", "json[]", `array['{"bar": "baz"}','{"foo": "qux"}']::json[]`, w(`["{\"bar\": \"baz\"}","{\"foo\": \"qux\"}"]`), srcArrays},
	{"jsonb_array", "jsonb[]", `array['{"bar": "baz"}','{"foo": "qux"}']::jsonb[]`, w(`["{\"bar\": \"baz\"}","{\"foo\": \"qux\"}"]`), srcArrays},
	{"oid_array", "oid[]", "'{3,4000000000}'", w("[3,4000000000]"), srcArrays},
	{"bytea_array", "bytea[]", `array[E'\\000\\001\\002'::bytea, E'\\003\\004\\005'::bytea]`, w(`["AAEC","AwQF"]`, "B", `["000102","030405"]`), srcBin},
	{"int_array_null", "int[]", "NULL", w("null"), "AbstractRecordsProducerTest.schemasAndValuesForArrayTypesWithNullValues"},

	{"hs", "hstore", `'"key" => "val"'::hstore`, w(`"{\"key\":\"val\"}"`, "B", `{"key":"val"}`), srcHstore},
	{"hs_mul", "hstore", `'"key1" => "val1","key2" => "val2","key3" => "val3"'`,
		w(`"{\"key1\":\"val1\",\"key2\":\"val2\",\"key3\":\"val3\"}"`, "B", `{"key1":"val1","key2":"val2","key3":"val3"}`), srcHstore},
	{"hsarr", "hstore[]", `array['"key4" => "val4","key5" => NULL'::hstore, '"key6" => "val6"']`,
		w(`["{\"key5\":null,\"key4\":\"val4\"}","{\"key6\":\"val6\"}"]`, "B", `[{"key5":null,"key4":"val4"},{"key6":"val6"}]`), srcHstore},
	{"hs_special", "hstore", `'"key_#1" => "val 1","key 2" =>" ##123 78"'`,
		w(`"{\"key_#1\":\"val 1\",\"key 2\":\" ##123 78\"}"`, "B", `{"key_#1":"val 1","key 2":" ##123 78"}`), srcHstore},

	{"mood", "{mood}", "'sad'", w(`"sad"`), srcEnum},
	{"moods", "{mood}[]", "'{happy,sad,NULL}'", w(`["happy","sad",null]`), srcEnum + " (array of the enum)"},
	{"ts_min", "timestamp(6)", "'4713-12-31T23:59:59.999999 BC'::timestamp", w("-210831897600000001", "C", "-210831897600001"),
		srcTime + " (ts_min: streaming value -210831897600000001)"},
	{"pi", "{posint}", "5", w("5"), srcDomains + " (a domain is its base type)"},
	{"amt", "{amount}", "12.5", w(`"BOI="`, "B", `"12.50"`, "C", "12.5"), srcDomains + " (numeric_alias)"},
	{"lt", "ltree", "'Top.Collections.Pictures.Astronomy.Galaxies'", w(`"Top.Collections.Pictures.Astronomy.Galaxies"`), srcCustom},
	{"tsv", "tsvector", "'a fat cat'", w(`"'a' 'cat' 'fat'"`), srcTsvector},
}

// dbzSchemas are field schemas JsonConverter writes for some columns in
// run A, from the same tests' expected Connect schemas.
var dbzSchemas = map[string]string{
	"d":             `{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","connect.decimal.precision":"3"},"field":"d"}`,
	"d_nn":          `{"type":"bytes","optional":false,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","connect.decimal.precision":"3"},"field":"d_nn"}`,
	"dvs":           `{"type":"struct","fields":[{"type":"int32","optional":false,"field":"scale"},{"type":"bytes","optional":false,"field":"value"}],"optional":true,"name":"io.debezium.data.VariableScaleDecimal","version":1,"doc":"Variable scaled decimal","field":"dvs"}`,
	"csh":           `{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2"},"field":"csh"}`,
	"bs":            `{"type":"bytes","optional":true,"name":"io.debezium.data.Bits","version":1,"parameters":{"length":"2"},"field":"bs"}`,
	"bvunlimited1":  `{"type":"bytes","optional":true,"name":"io.debezium.data.Bits","version":1,"parameters":{"length":"2147483647"},"field":"bvunlimited1"}`,
	"ts":            `{"type":"int64","optional":true,"name":"io.debezium.time.MicroTimestamp","version":1,"field":"ts"}`,
	"ts_ms":         `{"type":"int64","optional":true,"name":"io.debezium.time.Timestamp","version":1,"field":"ts_ms"}`,
	"tz":            `{"type":"string","optional":true,"name":"io.debezium.time.ZonedTimestamp","version":1,"field":"tz"}`,
	"date":          `{"type":"int32","optional":true,"name":"io.debezium.time.Date","version":1,"field":"date"}`,
	"ti":            `{"type":"int64","optional":true,"name":"io.debezium.time.MicroTime","version":1,"field":"ti"}`,
	"tip":           `{"type":"int32","optional":true,"name":"io.debezium.time.Time","version":1,"field":"tip"}`,
	"ttz":           `{"type":"string","optional":true,"name":"io.debezium.time.ZonedTime","version":1,"field":"ttz"}`,
	"it":            `{"type":"int64","optional":true,"name":"io.debezium.time.MicroDuration","version":1,"field":"it"}`,
	"j":             `{"type":"string","optional":true,"name":"io.debezium.data.Json","version":1,"field":"j"}`,
	"x":             `{"type":"string","optional":true,"name":"io.debezium.data.Xml","version":1,"field":"x"}`,
	"u":             `{"type":"string","optional":true,"name":"io.debezium.data.Uuid","version":1,"field":"u"}`,
	"ba":            `{"type":"bytes","optional":true,"field":"ba"}`,
	"bnn":           `{"type":"bytes","optional":false,"field":"bnn"}`,
	"int_array":     `{"type":"array","items":{"type":"int32","optional":true},"optional":true,"field":"int_array"}`,
	"numeric_array": `{"type":"array","items":{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","connect.decimal.precision":"10"}},"optional":true,"field":"numeric_array"}`,
	"mood":          `{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"happy,sad"},"field":"mood"}`,
	"p":             `{"type":"struct","fields":[{"type":"double","optional":false,"field":"x"},{"type":"double","optional":false,"field":"y"},{"type":"bytes","optional":true,"field":"wkb"},{"type":"int32","optional":true,"field":"srid"}],"optional":true,"name":"io.debezium.data.geometry.Point","version":1,"doc":"Geometry (POINT)","field":"p"}`,
}

// dbzRecord is a record value as JsonConverter writes it; Payload is the
// whole value without schemas.
type dbzRecord struct {
	Schema  json.RawMessage `json:"schema"`
	Payload json.RawMessage `json:"payload"`
}

type dbzPayload struct {
	Before      map[string]json.RawMessage `json:"before"`
	After       map[string]json.RawMessage `json:"after"`
	Source      map[string]json.RawMessage `json:"source"`
	Transaction json.RawMessage            `json:"transaction"`
	Op          string                     `json:"op"`
}

// TestDebeziumEncodingGolden runs capture with CDCSYNC_ENCODING=debezium in
// four mode combinations over one table holding the values of Debezium's
// own PostgreSQL tests, one row before capture starts (snapshot) and the
// same row after (stream), then an update that leaves a TOASTed column
// alone; every column of every record must be the value Debezium's tests
// expect, byte for byte.
func TestDebeziumEncodingGolden(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	db := e.PG.CreateDB(t)
	conn := typesConn(ctx, t, e.PG.URL(db))
	name := testenv.RandomName("dbz")
	ident := pgx.Identifier{"public", name}.Sanitize()
	mood := pgx.Identifier{testenv.RandomName("mood")}.Sanitize()
	posint := pgx.Identifier{testenv.RandomName("posint")}.Sanitize()
	amount := pgx.Identifier{testenv.RandomName("amount")}.Sanitize()
	mustExec(t, conn, "CREATE EXTENSION IF NOT EXISTS hstore", "CREATE EXTENSION IF NOT EXISTS ltree",
		"CREATE TYPE "+mood+" AS ENUM ('happy', 'sad')",
		"CREATE DOMAIN "+posint+" AS integer CHECK (VALUE > 0)",
		"CREATE DOMAIN "+amount+" AS numeric(12,2)")
	types := strings.NewReplacer("{mood}", mood, "{posint}", posint, "{amount}", amount)
	// Arrays Debezium has no schema for: in the table, never in a record.
	defs := []string{"id bigint PRIMARY KEY", "big text", "mona money[]", "iva interval[]", "xa xml[]", "vba varbit[]", "pa point[]"}
	cols := []string{"id", "big", "mona", "iva", "xa", "vba", "pa"}
	var vals []string
	for _, c := range dbzColumns {
		defs = append(defs, pgx.Identifier{c.name}.Sanitize()+" "+types.Replace(c.typ))
		cols = append(cols, pgx.Identifier{c.name}.Sanitize())
		vals = append(vals, c.value)
	}
	mustExec(t, conn, "CREATE TABLE "+ident+" ("+strings.Join(defs, ", ")+")",
		"ALTER TABLE "+ident+" ALTER COLUMN big SET STORAGE EXTERNAL",
		// Only big goes out of line: the row is wide enough that the
		// default target would move other columns too.
		"ALTER TABLE "+ident+" SET (toast_tuple_target = 8160)")
	insert := func(id int) {
		t.Helper()
		mustExec(t, conn, "INSERT INTO "+ident+" ("+strings.Join(cols, ", ")+") VALUES ("+fmt.Sprint(id)+
			", (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i), '{1.5}', '{1 day}', '{<a/>}', '{101}', '{\"(1,2)\"}', "+
			strings.Join(vals, ", ")+")")
	}
	insert(1) // snapshot

	topics := map[string]string{}
	for run, enc := range dbzRuns {
		cfg := testConfig(e, db, "public."+name)
		cfg.Encoding = enc
		topics[run] = pipeline.Topic(cfg.TopicPrefix, "public", name)
		startCapture(t, cfg)
	}
	for run, topic := range topics {
		waitFor(t, 60*time.Second, "snapshot of run "+run, func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 1 })
	}
	insert(2) // streamed
	mustExec(t, conn, "UPDATE "+ident+" SET i = 7 WHERE id = 2")
	for run, topic := range topics {
		waitFor(t, 60*time.Second, "stream of run "+run, func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 3 })
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string][]*sarama.ConsumerMessage{}
	for run, topic := range topics {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var msgs []*sarama.ConsumerMessage
			consumeTopic(t, e.Kafka.Brokers(), topic, func(m *sarama.ConsumerMessage) { msgs = append(msgs, m) })
			mu.Lock()
			got[run] = msgs
			mu.Unlock()
		}()
	}
	wg.Wait()

	for run, msgs := range got {
		enc := dbzRuns[run]
		if len(msgs) != 3 {
			t.Errorf("run %s: %d records, want 3 (snapshot, insert, update)", run, len(msgs))
			continue
		}
		for _, m := range msgs {
			checkDebeziumRecord(t, run, enc, name, db, m)
		}
	}
}

func checkDebeziumRecord(t *testing.T, run string, enc config.Encoding, table, db string, m *sarama.ConsumerMessage) {
	t.Helper()
	var rec dbzRecord
	payload := m.Value
	if enc.SchemasEnable {
		if err := json.Unmarshal(m.Value, &rec); err != nil {
			t.Fatalf("run %s: value is not {schema, payload}: %v", run, err)
		}
		payload = rec.Payload
	} else if bytes.HasPrefix(m.Value, []byte(`{"schema"`)) {
		t.Errorf("run %s: schemas disabled, but the value has a schema", run)
	}
	var p dbzPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		t.Fatalf("run %s: payload: %v", run, err)
	}
	id := string(p.After["id"])
	what := fmt.Sprintf("run %s, %s record of id %s", run, p.Op, id)
	wantKey := `{"id":` + id + `}`
	if enc.SchemasEnable {
		wantKey = `{"schema":{"type":"struct","fields":[{"type":"int64","optional":false,"field":"id"}],"optional":false,"name":"` +
			strings.TrimSuffix(m.Topic, "") + `.Key"},"payload":{"id":` + id + `}}`
	}
	if string(m.Key) != wantKey {
		t.Errorf("%s: key %s, want %s", what, m.Key, wantKey)
	}
	wantOp, wantSnapshot := map[string]string{"1": "r", "2": "c"}[id], map[string]string{"1": "last", "2": "false"}[id]
	if p.Op == "u" {
		wantOp, wantSnapshot = "u", "false"
	}
	if p.Op != wantOp || string(p.Source["snapshot"]) != `"`+wantSnapshot+`"` {
		t.Errorf("%s: op %q, source.snapshot %s; want %q, %q", what, p.Op, p.Source["snapshot"], wantOp, wantSnapshot)
	}
	for field, want := range map[string]string{"version": `"3.1.3.Final"`, "connector": `"postgresql"`, "db": `"` + db + `"`,
		"schema": `"public"`, "table": `"` + table + `"`, "xmin": "null"} {
		if string(p.Source[field]) != want {
			t.Errorf("%s: source.%s = %s, want %s", what, field, p.Source[field], want)
		}
	}
	if string(p.Transaction) != "null" {
		t.Errorf("%s: transaction %s, want null (metadata not asked for)", what, p.Transaction)
	}
	for _, c := range dbzColumns {
		want, ok := c.want[run]
		if !ok {
			want = c.want["A"]
		}
		if c.name == "i" && p.Op == "u" {
			want = "7"
		}
		if got := string(p.After[c.name]); got != want {
			t.Errorf("%s: column %s = %s, want %s (%s)", what, c.name, got, want, c.src)
		}
	}
	for _, omitted := range []string{"mona", "iva", "xa", "vba", "pa"} {
		if v, ok := p.After[omitted]; ok {
			t.Errorf("%s: column %s = %s; Debezium leaves arrays of its type out", what, omitted, v)
		}
	}
	// The TOASTed column the update left alone carries the placeholder.
	wantBig := `"` + enc.UnavailablePlaceholder + `"`
	if got := string(p.After["big"]); (p.Op == "u") != (got == wantBig) {
		t.Errorf("%s: big = %.60s (placeholder %s expected only in the update)", what, got, enc.UnavailablePlaceholder)
	}
	if run == "A" {
		for col, want := range dbzSchemas {
			if !bytes.Contains(rec.Schema, []byte(want)) {
				t.Errorf("%s: the value schema lacks %s's field schema %s", what, col, want)
			}
		}
	}
}

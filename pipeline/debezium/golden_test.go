package debezium

import (
	"encoding/json"
	"testing"
)

// goldenCase is one column value: its Postgres type, cdcsync's JSON
// rendering of the value (what capture produces, as capture's own type
// tests pin it), and the payload value Debezium writes, with the Debezium
// test the expectation is taken from.
type goldenCase struct {
	name   string
	typ    Type
	in     string
	want   string
	source string
}

// Debezium test classes the expectations come from.
const (
	arpt       = "AbstractRecordsProducerTest"
	numeric    = arpt + ".schemasAndValuesForNumericType"
	bigDec     = arpt + ".schemasAndValuesForBigDecimalEncodedNumericTypes"
	strDec     = arpt + ".schemasAndValuesForStringEncodedNumericTypes"
	strDecInf  = arpt + ".schemasAndValuesForStringEncodedNumericTypesWithInfinity"
	dblDec     = arpt + ".schemasAndValuesForDoubleEncodedNumericTypes"
	money      = arpt + ".schemaAndValuesForMoneyTypes"
	negMoney   = arpt + ".schemaAndValuesForNegativeMoneyTypes"
	bin        = arpt + ".schemaAndValuesForBinTypes"
	dateTimes  = arpt + ".schemaAndValuesForDateTimeTypes"
	dateTimeUs = arpt + ".schemaAndValuesForDateTimeTypesAdaptiveTimeMicroseconds"
	ivString   = arpt + ".schemaAndValuesForIntervalAsString"
	arrays     = arpt + ".schemasAndValuesForArrayTypes"
	timeArrays = arpt + ".schemaAndValuesForTimeArrayTypes"
	hsJSON     = arpt + ".schemaAndValueFieldForJsonEncodedHStoreType*"
	hsMap      = arpt + ".schemaAndValueFieldForMapEncodedHStoreType*"
	strTypes   = arpt + ".schemasAndValuesForStringTypes"
	textTypes  = arpt + ".schemasAndValuesForTextTypes"
	netTypes   = arpt + ".schemasAndValuesForNetworkAddressTypes/ForCidrAddressType/ForMacaddrType/ForMacaddr8Type"
	ranges     = arpt + ".schemaAndValuesForRangeTypes"
	geom       = arpt + ".schemaAndValuesForGeomTypes"
	byteaModes = arpt + ".schemaAndValueForBytea{Bytes,Hex,Base64,Base64UrlSafe}"
	domains    = arpt + ".schemasAndValuesForDomainAliasTypes"
)

func bt(oid uint32, typmod int32) Type { return Type{OID: oid, TypMod: typmod} }

func arr(elem Type) Type { return Type{OID: 1, Elem: &elem} }

// numericMod is numeric(p,s)'s typmod.
func numericMod(p, s int32) int32 { return p<<16 | s + 4 }

func defaultModes() Config { return DefaultConfig() }

func TestGoldenValuesDefaultModes(t *testing.T) {
	runGolden(t, defaultModes(), goldenDefaultCases())
}

// goldenDefaultCases are the values in Debezium's default modes.
func goldenDefaultCases() []goldenCase {
	return []goldenCase{
		{"si", bt(oidInt2, -1), `1`, `1`, numeric},
		{"i", bt(oidInt4, -1), `123456`, `123456`, numeric},
		{"bi", bt(oidInt8, -1), `1234567890123`, `1234567890123`, numeric},
		{"r", bt(oidFloat4, -1), `3.3`, `3.3`, numeric},
		{"db", bt(oidFloat8, -1), `4.44`, `4.44`, numeric},
		{"r_int", bt(oidFloat4, -1), `3`, `3.0`, numeric},
		{"db_int", bt(oidFloat8, -1), `4`, `4.0`, numeric},
		{"r_nan", bt(oidFloat4, -1), `"NaN"`, `"NaN"`, numeric},
		{"db_nan", bt(oidFloat8, -1), `"NaN"`, `"NaN"`, numeric},
		{"r_pinf", bt(oidFloat4, -1), `"Infinity"`, `"Infinity"`, numeric},
		{"db_ninf", bt(oidFloat8, -1), `"-Infinity"`, `"-Infinity"`, numeric},
		{"b", bt(oidBool, -1), `true`, `true`, numeric},
		{"o", bt(oidOID, -1), `4000000000`, `4000000000`, numeric},

		{"d", bt(oidNumeric, numericMod(3, 2)), `"1.10"`, `"bg=="`, bigDec},
		{"dzs", bt(oidNumeric, numericMod(4, 0)), `"10"`, `"Cg=="`, bigDec},
		{"dvs", bt(oidNumeric, -1), `"10.1111"`, `{"scale":4,"value":"AYr3"}`, bigDec},
		{"d_nn", bt(oidNumeric, numericMod(3, 2)), `"3.30"`, `"AUo="`, bigDec},
		{"n", bt(oidNumeric, numericMod(6, 4)), `"22.2200"`, `"A2P4"`, bigDec},
		{"nzs", bt(oidNumeric, numericMod(4, 0)), `"22"`, `"Fg=="`, bigDec},
		{"nvs", bt(oidNumeric, -1), `"22.2222"`, `{"scale":4,"value":"A2QO"}`, bigDec},
		{"d_int", bt(oidNumeric, numericMod(3, 2)), `"1.00"`, `"ZA=="`, bigDec},
		{"dvs_int", bt(oidNumeric, -1), `"10"`, `{"scale":0,"value":"Cg=="}`, bigDec},
		{"n_int", bt(oidNumeric, numericMod(6, 4)), `"22.0000"`, `"A1tg"`, bigDec},
		{"nvs_int", bt(oidNumeric, -1), `"22"`, `{"scale":0,"value":"Fg=="}`, bigDec},

		{"csh", bt(oidMoney, -1), `"$1,234.11"`, `"AeIT"`, money},
		{"csh_neg", bt(oidMoney, -1), `"-$1,234.11"`, `"/h3t"`, negMoney},

		{"ba", bt(oidBytea, -1), `"AQID"`, `"AQID"`, bin},
		{"bol", bt(oidBit, 1), `"0"`, `false`, bin},
		{"bol2", bt(oidBit, 1), `"1"`, `true`, bin},
		{"bs", bt(oidBit, 2), `"11"`, `"Aw=="`, bin},
		{"bs7", bt(oidBit, 7), `"1000000"`, `"QA=="`, bin},
		{"bv", bt(oidVarbit, 2), `"00"`, `""`, bin},
		{"bv2", bt(oidVarbit, 24), `"000000110000001000000001"`, `"AQID"`, bin},
		{"bvl", bt(oidVarbit, 64), `"1000000000000000000000000000000000000000000000000000000000000000"`, `"AAAAAAAAAIA="`, bin},
		{"bvunlimited1", bt(oidVarbit, -1), `"101"`, `"BQ=="`, bin},
		{"bvunlimited2", bt(oidVarbit, -1), `"111011010001000110000001000000001"`, `"AQIj2gE="`, bin},

		{"ts", bt(oidTimestamp, -1), `"2016-11-04T13:51:30.123456"`, `1478267490123456`, dateTimes},
		{"tsneg", bt(oidTimestamp, 6), `"1936-10-25T22:10:12.608"`, `-1047174587392000`, dateTimes},
		{"ts_ms", bt(oidTimestamp, 3), `"2016-11-04T13:51:30.123"`, `1478267490123`, dateTimes},
		{"tz", bt(oidTimestamptz, -1), `"2016-11-04T11:51:30.123456Z"`, `"2016-11-04T11:51:30.123456Z"`, dateTimes},
		{"date", bt(oidDate, -1), `"2016-11-04"`, `17109`, dateTimes},
		{"ti", bt(oidTime, -1), `"13:51:30"`, `49890000000`, dateTimes},
		{"tip", bt(oidTime, 3), `"13:51:30.123"`, `49890123`, dateTimes},
		{"ttf", bt(oidTime, -1), `"24:00:00"`, `86400000000`, dateTimes},
		{"ttz", bt(oidTimetz, -1), `"13:51:30.123789+02"`, `"11:51:30.123789Z"`, dateTimes},
		{"tptz", bt(oidTimetz, 3), `"13:51:30.123+02"`, `"11:51:30.123Z"`, dateTimes},
		{"it", bt(oidInterval, -1), `"P1Y2M3DT4H5M6.78S"`, `37091106780000`, dateTimes},
		{"ts_large", bt(oidTimestamp, -1), `"21016-11-04T13:51:30.123456"`, `601060312290123456`, dateTimes},
		{"ts_large_ms", bt(oidTimestamp, 3), `"21016-11-04T13:51:30.124"`, `601060312290124`, dateTimes},
		{"tz_large", bt(oidTimestamptz, -1), `"21016-11-04T06:51:30.123456Z"`, `"+21016-11-04T06:51:30.123456Z"`, dateTimes},
		{"ts_max", bt(oidTimestamp, 6), `"294247-01-01T23:59:59.999999"`, `9223371331199999999`, dateTimes},
		{"tz_max", bt(oidTimestamptz, -1), `"294247-01-01T23:59:59.999999Z"`, `"+294247-01-01T23:59:59.999999Z"`, dateTimes},
		{"ts_pinf", bt(oidTimestamp, 6), `"infinity"`, `9223372036825200000`, dateTimes},
		{"ts_ninf", bt(oidTimestamp, 6), `"-infinity"`, `-9223372036832400000`, dateTimes},
		{"tz_pinf", bt(oidTimestamptz, -1), `"infinity"`, `"infinity"`, dateTimes},
		{"tz_ninf", bt(oidTimestamptz, -1), `"-infinity"`, `"-infinity"`, dateTimes},
		{"tz_zero", bt(oidTimestamptz, -1), `"21016-11-04T06:51:30Z"`, `"+21016-11-04T06:51:30.000000Z"`, dateTimes},

		{"vc", bt(oidVarchar, 6), `"žš"`, `"žš"`, strTypes},
		{"ch", bt(oidBpchar, 8), `"cdef"`, `"cdef"`, strTypes},
		{"t", bt(oidText, -1), `"some text"`, `"some text"`, strTypes},
		{"bnn", bt(oidBytea, -1), `"AwQF"`, `"AwQF"`, strTypes},
		{"j", bt(oidJSON, -1), `"{\"bar\": \"baz\"}"`, `"{\"bar\": \"baz\"}"`, textTypes},
		{"x", bt(oidXML, -1), `"<foo>bar</foo><foo>bar</foo>"`, `"<foo>bar</foo><foo>bar</foo>"`, textTypes},
		{"u", bt(oidUUID, -1), `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`, `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`, textTypes},
		{"inet", bt(oidInet, -1), `"192.168.2.0/12"`, `"192.168.2.0/12"`, netTypes},
		{"cidr", bt(oidCidr, -1), `"192.168.100.128/25"`, `"192.168.100.128/25"`, netTypes},
		{"macaddr", bt(oidMacaddr, -1), `"08:00:2b:01:02:03"`, `"08:00:2b:01:02:03"`, netTypes},
		{"macaddr8", bt(oidMacaddr8, -1), `"08:00:2b:01:02:03:04:05"`, `"08:00:2b:01:02:03:04:05"`, netTypes},
		{"tsrange", bt(oidTsrange, -1), `"[\"2019-03-31 15:30:00\",infinity)"`, `"[\"2019-03-31 15:30:00\",infinity)"`, ranges},
		{"daterange", bt(oidDaterange, -1), `"[2019-03-31,2019-04-30)"`, `"[2019-03-31,2019-04-30)"`, ranges},
		{"int4range", bt(oidInt4range, -1), `"[1000,6000)"`, `"[1000,6000)"`, ranges},
		{"numrange", bt(oidNumrange, -1), `"[5.3,6.3)"`, `"[5.3,6.3)"`, ranges},
		{"p", bt(oidPoint, -1), `"(1,1)"`, `{"x":1.0,"y":1.0,"wkb":"AQEAAAAAAAAAAADwPwAAAAAAAPA/","srid":null}`, geom},

		{"int_array", arr(bt(oidInt4, -1)), `[1,2,3]`, `[1,2,3]`, arrays},
		{"bigint_array", arr(bt(oidInt8, -1)), `[1550166368505037572]`, `[1550166368505037572]`, arrays},
		{"text_array", arr(bt(oidText, -1)), `["one","two","three"]`, `["one","two","three"]`, arrays},
		{"char_array", arr(bt(oidBpchar, 14)), `["cone      ","ctwo      ","cthree    "]`, `["cone      ","ctwo      ","cthree    "]`, arrays},
		{"date_array", arr(bt(oidDate, -1)), `["2016-11-04","2016-11-05","2016-11-06"]`, `[17109,17110,17111]`, arrays},
		{"numeric_array", arr(bt(oidNumeric, numericMod(10, 2))), `["1.20","3.40","5.60"]`, `["eA==","AVQ=","AjA="]`, arrays},
		{"varnumeric_array", arr(bt(oidNumeric, -1)), `["1.1","2.22","3.333"]`,
			`[{"scale":1,"value":"Cw=="},{"scale":2,"value":"AN4="},{"scale":3,"value":"DQU="}]`, arrays},
		{"uuid_array", arr(bt(oidUUID, -1)), `["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]`, `["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]`, arrays},
		{"jsonb_array", arr(bt(oidJSONB, -1)), `["{\"bar\": \"baz\"}","{\"foo\": \"qux\"}"]`, `["{\"bar\": \"baz\"}","{\"foo\": \"qux\"}"]`, arrays},
		{"oid_array", arr(bt(oidOID, -1)), `[3,4000000000]`, `[3,4000000000]`, arrays},
		{"int_array_null", arr(bt(oidInt4, -1)), `null`, `null`, arrays},
		{"timea", arr(bt(oidTime, -1)), `["00:01:02","01:02:03"]`, `[62000000,3723000000]`, timeArrays},
		{"timestamptza", arr(bt(oidTimestamptz, -1)), `["2020-04-01T11:51:02Z","2020-04-01T12:51:03Z"]`,
			`["2020-04-01T11:51:02.000000Z","2020-04-01T12:51:03.000000Z"]`, timeArrays},

		{"hs", Type{Name: "hstore"}, `"\"key\"=>\"val\""`, `"{\"key\":\"val\"}"`, hsJSON},
		{"hs_mul", Type{Name: "hstore"}, `"\"key1\"=>\"val1\", \"key2\"=>\"val2\", \"key3\"=>\"val3\""`,
			`"{\"key1\":\"val1\",\"key2\":\"val2\",\"key3\":\"val3\"}"`, hsJSON},
		{"hsarr", arr(Type{Name: "hstore"}), `["\"key4\"=>\"val4\", \"key5\"=>NULL","\"key6\"=>\"val6\""]`,
			`["{\"key5\":null,\"key4\":\"val4\"}","{\"key6\":\"val6\"}"]`, hsJSON},
		{"hs_null", Type{Name: "hstore"}, `"\"key1\"=>\"val1\", \"key2\"=>NULL"`, `"{\"key1\":\"val1\",\"key2\":null}"`, hsJSON},
		{"hs_special", Type{Name: "hstore"}, `"\"key 2\"=>\" ##123 78\", \"key_#1\"=>\"val 1\""`,
			`"{\"key_#1\":\"val 1\",\"key 2\":\" ##123 78\"}"`, hsJSON},

		{"enum", Type{OID: 90000, Enum: []string{"happy", "sad"}}, `"sad"`, `"sad"`, "PostgresValueConverter: an enum is io.debezium.data.Enum"},
	}
}

func TestGoldenValuesOtherModes(t *testing.T) {
	cfg := defaultModes()
	cfg.DecimalHandling = "string"
	runGolden(t, cfg, []goldenCase{
		{"d", bt(oidNumeric, numericMod(3, 2)), `"1.10"`, `"1.10"`, strDec},
		{"dvs", bt(oidNumeric, -1), `"10.1111"`, `"10.1111"`, strDec},
		{"nzs_int", bt(oidNumeric, numericMod(4, 0)), `"22"`, `"22"`, strDec},
		{"d_nan", bt(oidNumeric, numericMod(3, 2)), `"NaN"`, `"NAN"`, strDec},
		{"dvs_pinf", bt(oidNumeric, -1), `"Infinity"`, `"POSITIVE_INFINITY"`, strDecInf},
		{"nvs_ninf", bt(oidNumeric, -1), `"-Infinity"`, `"NEGATIVE_INFINITY"`, strDecInf},
	})
	cfg.DecimalHandling = "double"
	runGolden(t, cfg, []goldenCase{
		{"d", bt(oidNumeric, numericMod(3, 2)), `"1.10"`, `1.1`, dblDec},
		{"dzs", bt(oidNumeric, numericMod(4, 0)), `"10"`, `10.0`, dblDec},
		{"dvs", bt(oidNumeric, -1), `"10.1111"`, `10.1111`, dblDec},
		{"n", bt(oidNumeric, numericMod(6, 4)), `"22.2200"`, `22.22`, dblDec},
		{"d_nan", bt(oidNumeric, numericMod(3, 2)), `"NaN"`, `"NaN"`, dblDec},
		{"numeric_base", bt(oidNumeric, numericMod(6, 2)), `"1234.12"`, `1234.12`, domains},
	})
	cfg = defaultModes()
	cfg.TimePrecision = "adaptive_time_microseconds"
	runGolden(t, cfg, []goldenCase{
		{"ts", bt(oidTimestamp, -1), `"2016-11-04T13:51:30.123456"`, `1478267490123456`, dateTimeUs},
		{"ts_ms", bt(oidTimestamp, 3), `"2016-11-04T13:51:30.123"`, `1478267490123`, dateTimeUs},
		{"ti", bt(oidTime, -1), `"13:51:30"`, `49890000000`, dateTimeUs},
		{"tip", bt(oidTime, 3), `"13:51:30.123"`, `49890123000`, dateTimeUs},
		{"ttz", bt(oidTimetz, -1), `"13:51:30.123789+02"`, `"11:51:30.123789Z"`, dateTimeUs},
	})
	cfg = defaultModes()
	cfg.IntervalHandling = "string"
	runGolden(t, cfg, []goldenCase{
		{"it", bt(oidInterval, -1), `"P1Y2M3DT4H5M6.78S"`, `"P1Y2M3DT4H5M6.78S"`, ivString},
	})
	cfg = defaultModes()
	cfg.HstoreHandling = "map"
	runGolden(t, cfg, []goldenCase{
		{"hs", Type{Name: "hstore"}, `"\"key\"=>\"val\""`, `{"key":"val"}`, hsMap},
		{"hs_null", Type{Name: "hstore"}, `"\"key1\"=>\"val1\", \"key2\"=>NULL"`, `{"key1":"val1","key2":null}`, hsMap},
	})
	for mode, want := range map[string][2]string{
		"hex":             {`"010203"`, `["000102","030405"]`},
		"base64":          {`"AQID"`, `["AAEC","AwQF"]`},
		"base64-url-safe": {`"AQID"`, `["AAEC","AwQF"]`},
		"bytes":           {`"AQID"`, `["AAEC","AwQF"]`},
	} {
		cfg = defaultModes()
		cfg.BinaryHandling = mode
		runGolden(t, cfg, []goldenCase{
			{"ba/" + mode, bt(oidBytea, -1), `"AQID"`, want[0], byteaModes},
			{"bytea_array/" + mode, arr(bt(oidBytea, -1)), `["AAEC","AwQF"]`, want[1], byteaModes},
		})
	}
}

func runGolden(t *testing.T, cfg Config, cases []goldenCase) {
	t.Helper()
	for _, c := range cases {
		p := cfg.planColumn(c.name, c.typ, true)
		got, err := cfg.appendValue(nil, p, json.RawMessage(c.in))
		if err != nil {
			t.Errorf("%s (%s): %v", c.name, c.source, err)
			continue
		}
		if string(got) != c.want {
			t.Errorf("%s (%s): got %s, want %s", c.name, c.source, got, c.want)
		}
	}
}

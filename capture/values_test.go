package capture

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

type valueCase struct {
	name string
	oid  uint32
	text string
	want string // JSON
}

func checkValues(t *testing.T, types *Types, cases []valueCase) {
	t.Helper()
	for _, c := range cases {
		prefix := []byte(`[1,`)
		got, err := types.AppendJSON(prefix, c.oid, []byte(c.text))
		if err != nil {
			t.Errorf("%s: AppendJSON(%d, %q): %v", c.name, c.oid, c.text, err)
			continue
		}
		if !bytes.HasPrefix(got, []byte(`[1,`)) {
			t.Errorf("%s: AppendJSON clobbered the buffer: %s", c.name, got)
			continue
		}
		if v := got[len(prefix):]; string(v) != c.want {
			t.Errorf("%s: AppendJSON(%d, %q) = %s, want %s", c.name, c.oid, c.text, v, c.want)
		}
		if !json.Valid(append(got, ']')) {
			t.Errorf("%s: not valid JSON: %s", c.name, got)
		}
	}
}

func TestValueScalars(t *testing.T) {
	checkValues(t, NewTypes(), []valueCase{
		{"int2", pgtype.Int2OID, "-32768", `-32768`},
		{"int4", pgtype.Int4OID, "42", `42`},
		{"int8 max", pgtype.Int8OID, "9223372036854775807", `9223372036854775807`},
		{"oid", pgtype.OIDOID, "4294967295", `4294967295`},
		{"numeric", pgtype.NumericOID, "123.4500", `"123.4500"`},
		{"numeric negative", pgtype.NumericOID, "-0.000000000000000000001", `"-0.000000000000000000001"`},
		{"numeric huge", pgtype.NumericOID, "123456789012345678901234567890.12", `"123456789012345678901234567890.12"`},
		{"numeric NaN", pgtype.NumericOID, "NaN", `"NaN"`},
		{"numeric Infinity", pgtype.NumericOID, "Infinity", `"Infinity"`},
		{"numeric -Infinity", pgtype.NumericOID, "-Infinity", `"-Infinity"`},
		{"float8", pgtype.Float8OID, "1.5", `1.5`},
		{"float8 exponent", pgtype.Float8OID, "1e+100", `1e+100`},
		{"float8 small", pgtype.Float8OID, "1.2345678901234567e-05", `1.2345678901234567e-05`},
		{"float8 negative zero", pgtype.Float8OID, "-0", `-0`},
		{"float8 NaN", pgtype.Float8OID, "NaN", `"NaN"`},
		{"float8 Infinity", pgtype.Float8OID, "Infinity", `"Infinity"`},
		{"float4 -Infinity", pgtype.Float4OID, "-Infinity", `"-Infinity"`},
		{"float4 max", pgtype.Float4OID, "3.4028235e+38", `3.4028235e+38`},
		{"bool true", pgtype.BoolOID, "t", `true`},
		{"bool false", pgtype.BoolOID, "f", `false`},
		{"text", pgtype.TextOID, "plain", `"plain"`},
		{"text empty", pgtype.TextOID, "", `""`},
		{"text escapes", pgtype.TextOID, "a \"q\" \\ b\nc\td\x01", `"a \"q\" \\ b\nc\td\u0001"`},
		{"text unicode", pgtype.TextOID, "héllo 日本 😀 <&>", `"héllo 日本 😀 <&>"`},
		{"varchar", pgtype.VarcharOID, "v", `"v"`},
		{"bpchar padded", pgtype.BPCharOID, "ab  ", `"ab  "`},
		{"name", pgtype.NameOID, "pg_class", `"pg_class"`},
		{"char", pgtype.QCharOID, "x", `"x"`},
		{"uuid", pgtype.UUIDOID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`},
		{"inet", pgtype.InetOID, "192.168.0.1/24", `"192.168.0.1/24"`},
		{"cidr", pgtype.CIDROID, "10.0.0.0/8", `"10.0.0.0/8"`},
		{"macaddr", pgtype.MacaddrOID, "08:00:2b:01:02:03", `"08:00:2b:01:02:03"`},
		{"money", 790, "$1,234.56", `"$1,234.56"`},
		{"xml", pgtype.XMLOID, `<a b="c">d</a>`, `"<a b=\"c\">d</a>"`},
		{"json", pgtype.JSONOID, `{"a": [1, "x"]}`, `"{\"a\": [1, \"x\"]}"`},
		{"jsonb", pgtype.JSONBOID, `{"k": "v\"w", "n": null}`, `"{\"k\": \"v\\\"w\", \"n\": null}"`},
		{"date", pgtype.DateOID, "2024-01-02", `"2024-01-02"`},
		{"date BC", pgtype.DateOID, "0044-03-15 BC", `"0044-03-15 BC"`},
		{"time", pgtype.TimeOID, "03:04:05.123456", `"03:04:05.123456"`},
		{"timetz", pgtype.TimetzOID, "03:04:05+05:30", `"03:04:05+05:30"`},
		{"interval", pgtype.IntervalOID, "P1Y2M3DT4H5M6.5S", `"P1Y2M3DT4H5M6.5S"`},
		{"interval negative", pgtype.IntervalOID, "PT-1H-0.5S", `"PT-1H-0.5S"`},
		{"unknown type", 999999, "(1,\"x y\")", `"(1,\"x y\")"`},
	})
}

func TestValueTimestamps(t *testing.T) {
	checkValues(t, NewTypes(), []valueCase{
		{"tstz utc", pgtype.TimestamptzOID, "2024-01-02 03:04:05.123456+00", `"2024-01-02T03:04:05.123456Z"`},
		{"tstz no fraction", pgtype.TimestamptzOID, "2024-01-02 03:04:05+00", `"2024-01-02T03:04:05Z"`},
		{"tstz +05:30", pgtype.TimestamptzOID, "2024-01-02 03:04:05.123456+05:30", `"2024-01-01T21:34:05.123456Z"`},
		{"tstz -08", pgtype.TimestamptzOID, "2023-12-31 20:30:00.5-08", `"2024-01-01T04:30:00.5Z"`},
		{"tstz seconds offset", pgtype.TimestamptzOID, "1850-06-01 12:00:00+00:53:28", `"1850-06-01T11:06:32Z"`},
		{"tstz year 10000", pgtype.TimestamptzOID, "10000-01-01 00:00:00+00", `"10000-01-01T00:00:00Z"`},
		{"tstz year 10000 offset", pgtype.TimestamptzOID, "10000-01-01 00:00:00+01", `"9999-12-31T23:00:00Z"`},
		{"tstz infinity", pgtype.TimestamptzOID, "infinity", `"infinity"`},
		{"tstz -infinity", pgtype.TimestamptzOID, "-infinity", `"-infinity"`},
		{"tstz BC", pgtype.TimestamptzOID, "0044-03-15 12:00:00+00 BC", `"0044-03-15 12:00:00+00 BC"`},
		{"tstz to year 0", pgtype.TimestamptzOID, "0001-01-01 00:00:00+01", `"0001-01-01 00:00:00+01"`},
		{"ts", pgtype.TimestampOID, "2024-01-02 03:04:05.123456", `"2024-01-02T03:04:05.123456"`},
		{"ts no fraction", pgtype.TimestampOID, "2024-01-02 03:04:05", `"2024-01-02T03:04:05"`},
		{"ts infinity", pgtype.TimestampOID, "infinity", `"infinity"`},
		{"ts BC", pgtype.TimestampOID, "0044-03-15 12:00:00 BC", `"0044-03-15 12:00:00 BC"`},
	})
}

func TestValueBytea(t *testing.T) {
	big := make([]byte, 5000) // more than one decoding chunk, not a multiple of 3
	for i := range big {
		big[i] = byte(i * 7)
	}
	var hexBig strings.Builder
	hexBig.WriteString(`\x`)
	for _, b := range big {
		hexBig.WriteString(string("0123456789abcdef"[b>>4]) + string("0123456789abcdef"[b&15]))
	}
	checkValues(t, NewTypes(), []valueCase{
		{"hex", pgtype.ByteaOID, `\x0102ff`, `"AQL/"`},
		{"hex upper", pgtype.ByteaOID, `\xDEADBEEF`, `"3q2+7w=="`},
		{"empty", pgtype.ByteaOID, `\x`, `""`},
		{"escape format", pgtype.ByteaOID, `a\000\\b\377`, `"` + base64.StdEncoding.EncodeToString([]byte("a\x00\\b\xff")) + `"`},
		{"big", pgtype.ByteaOID, hexBig.String(), `"` + base64.StdEncoding.EncodeToString(big) + `"`},
	})
	for _, bad := range []string{`\x0`, `\xzz`, `a\9`} {
		if _, err := NewTypes().AppendJSON(nil, pgtype.ByteaOID, []byte(bad)); !errors.Is(err, errBadValue) {
			t.Errorf("bytea %q: err = %v, want errBadValue", bad, err)
		}
	}
}

func TestValueArrays(t *testing.T) {
	checkValues(t, NewTypes(), []valueCase{
		{"int4[]", pgtype.Int4ArrayOID, "{1,-2,3}", `[1,-2,3]`},
		{"empty", pgtype.Int4ArrayOID, "{}", `[]`},
		{"int4[][] with NULL", pgtype.Int4ArrayOID, "{{1,NULL},{3,4}}", `[[1,null],[3,4]]`},
		{"3 dims", pgtype.Int8ArrayOID, "{{{1},{2}},{{3},{4}}}", `[[[1],[2]],[[3],[4]]]`},
		{"lower bounds", pgtype.Int4ArrayOID, "[0:1]={7,8}", `[7,8]`},
		{"lower bounds 2d", pgtype.Int4ArrayOID, "[0:1][2:2]={{7},{8}}", `[[7],[8]]`},
		{"text[] quoting", pgtype.TextArrayOID,
			`{plain,NULL,"NULL","with \"quote\"","back\\slash","",",","{x}","a b"}`,
			`["plain",null,"NULL","with \"quote\"","back\\slash","",",","{x}","a b"]`},
		{"text[][] nested quoted", pgtype.TextArrayOID, `{{"a}",NULL},{"",b}}`, `[["a}",null],["","b"]]`},
		{"text[] unicode", pgtype.TextArrayOID, `{日本,"😀 x"}`, `["日本","😀 x"]`},
		{"varchar[] newline", pgtype.VarcharArrayOID, "{\"a\nb\"}", `["a\nb"]`},
		{"bool[]", pgtype.BoolArrayOID, "{t,f,NULL}", `[true,false,null]`},
		{"numeric[]", pgtype.NumericArrayOID, "{1.50,NaN,-Infinity}", `["1.50","NaN","-Infinity"]`},
		{"float8[]", pgtype.Float8ArrayOID, "{1.5,NaN,-Infinity,1e-07}", `[1.5,"NaN","-Infinity",1e-07]`},
		{"jsonb[]", pgtype.JSONBArrayOID, `{"{\"a\": 1}","[1, 2]","null",NULL,null}`, `["{\"a\": 1}","[1, 2]","null",null,null]`},
		{"bytea[]", pgtype.ByteaArrayOID, `{"\\x0102","\\x",NULL}`, `["AQI=","",null]`},
		{"timestamptz[]", pgtype.TimestamptzArrayOID, `{"2024-01-02 03:04:05+00","2024-01-02 03:04:05.5+05:30",infinity}`,
			`["2024-01-02T03:04:05Z","2024-01-01T21:34:05.5Z","infinity"]`},
		{"date[]", pgtype.DateArrayOID, `{2024-01-02,NULL}`, `["2024-01-02",null]`},
		{"uuid[]", pgtype.UUIDArrayOID, `{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}`, `["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]`},
		{"box[] uses ;", pgtype.BoxArrayOID, `{(1,1),(0,0);(2,2),(1,1)}`, `["(1,1),(0,0)","(2,2),(1,1)"]`},
	})
	for _, bad := range []string{"{1,2", "{1,2}x", "1,2", "{1,{2}", `{"a}`, `{a"b}`, "[0:1]{1}", "{x}"} {
		if _, err := NewTypes().AppendJSON(nil, pgtype.Int4ArrayOID, []byte(bad)); !errors.Is(err, errBadValue) {
			t.Errorf("int4[] %q: err = %v, want errBadValue", bad, err)
		}
	}
}

func TestValueErrors(t *testing.T) {
	types := NewTypes()
	for _, c := range []valueCase{
		{"int not a number", pgtype.Int4OID, "12a", ""},
		{"int empty", pgtype.Int8OID, "", ""},
		{"float garbage", pgtype.Float8OID, "1.2.3", ""},
		{"bool garbage", pgtype.BoolOID, "true", ""},
	} {
		buf := []byte("keep")
		got, err := types.AppendJSON(buf, c.oid, []byte(c.text))
		if !errors.Is(err, errBadValue) {
			t.Errorf("%s: err = %v, want errBadValue", c.name, err)
		}
		if string(got) != "keep" {
			t.Errorf("%s: buffer on error = %q, want it unchanged", c.name, got)
		}
	}
}

func TestTypesAddType(t *testing.T) {
	types := NewTypes()
	if !types.AddType(pgtype.Int4OID, "pg_catalog", "int4") {
		t.Error("AddType of a built-in type: want exact")
	}
	gen := types.generation()
	if types.AddType(70000, "public", "mood") {
		t.Error("AddType of an enum from a Type message: want not exact")
	}
	if types.AddType(70001, "public", "_mood") {
		t.Error("AddType of an enum array: want not exact")
	}
	if types.generation() == gen {
		t.Error("generation did not change after AddType")
	}
	gen = types.generation()
	types.AddType(70000, "public", "mood") // again, same name: no change
	if types.generation() != gen {
		t.Error("generation changed on a repeated AddType")
	}
	if types.Known(70000) || !types.Known(pgtype.TextOID) || !types.Known(pgtype.Int4ArrayOID) {
		t.Error("Known: want built-ins known and guessed types not")
	}
	// A type named like an array but whose values are not arrays stays a string.
	types.AddType(70002, "public", "_weird")
	checkValues(t, types, []valueCase{
		{"enum", 70000, "happy", `"happy"`},
		{"enum array", 70001, `{happy,"very sad",NULL}`, `["happy","very sad",null]`},
		{"not an array after all", 70002, "x", `"x"`},
	})
}

func TestSessionParams(t *testing.T) {
	p := SessionParams()
	p["TimeZone"] = "changed"
	if SessionParams()["TimeZone"] != "UTC" {
		t.Fatal("SessionParams returned shared state")
	}
}

func BenchmarkValueTimestamptz(b *testing.B) {
	types := NewTypes()
	text := []byte("2024-01-02 03:04:05.123456+00")
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = types.AppendJSON(buf[:0], pgtype.TimestamptzOID, text)
	}
}

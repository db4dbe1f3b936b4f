package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// pgColumn is one column of the integration table: its SQL type and an SQL
// expression (%[1]s is the column) computing the JSON the decoder must
// produce, independently of the decoder's code.
type pgColumn struct {
	name, typ, expect string
	// utcZ: the expectation is to_json of timestamptz values, which writes
	// "+00:00" (the check connection is in UTC) where capture writes "Z".
	utcZ bool
}

// pgTestColumns lists a column of every type capture maps. {mood} and
// {posint}, {amount} are replaced by the test's enum and domain names.
var pgTestColumns = []pgColumn{
	{name: "id", typ: "bigint PRIMARY KEY", expect: "%[1]s::text::json"},
	{name: "i2", typ: "smallint", expect: "%[1]s::text::json"},
	{name: "i4", typ: "integer", expect: "%[1]s::text::json"},
	{name: "i8", typ: "bigint", expect: "%[1]s::text::json"},
	{name: "o", typ: "oid", expect: "%[1]s::text::json"},
	{name: "num", typ: "numeric", expect: "to_json(%[1]s::text)"},
	{name: "f4", typ: "real", expect: "to_json(%[1]s)"},
	{name: "f8", typ: "double precision", expect: "to_json(%[1]s)"},
	{name: "b", typ: "boolean", expect: "to_json(%[1]s)"},
	{name: "t", typ: "text", expect: "to_json(%[1]s)"},
	{name: "vc", typ: "varchar(40)", expect: "to_json(%[1]s)"},
	{name: "bp", typ: "char(6)", expect: "to_json(%[1]s)"},
	{name: "nm", typ: "name", expect: "to_json(%[1]s)"},
	{name: "ch", typ: `"char"`, expect: "to_json(%[1]s)"},
	{name: "mon", typ: "money", expect: "to_json(%[1]s::text)"},
	{name: "ip", typ: "inet", expect: "to_json(%[1]s::text)"},
	{name: "net", typ: "cidr", expect: "to_json(%[1]s::text)"},
	{name: "mac", typ: "macaddr", expect: "to_json(%[1]s::text)"},
	{name: "u", typ: "uuid", expect: "to_json(%[1]s::text)"},
	{name: "x", typ: "xml", expect: "to_json(%[1]s::text)"},
	// BC values stay as printed; everything else is ISO 8601.
	{name: "ts", typ: "timestamp", expect: "CASE WHEN %[1]s::text LIKE '%% BC' THEN to_json(%[1]s::text) ELSE to_json(%[1]s) END"},
	{name: "tstz", typ: "timestamptz", expect: "CASE WHEN %[1]s::text LIKE '%% BC' THEN to_json(%[1]s::text) ELSE to_json(%[1]s) END", utcZ: true},
	{name: "d", typ: "date", expect: "to_json(%[1]s::text)"},
	{name: "tm", typ: "time", expect: "to_json(%[1]s::text)"},
	{name: "tmtz", typ: "timetz", expect: "to_json(%[1]s::text)"},
	{name: "iv", typ: "interval", expect: "to_json(%[1]s::text)"},
	{name: "js", typ: "json", expect: "to_json(%[1]s::text)"},
	{name: "jsb", typ: "jsonb", expect: "to_json(%[1]s::text)"},
	{name: "by", typ: "bytea", expect: `to_json(translate(encode(%[1]s, 'base64'), E'\n', ''))`},
	{name: "ia", typ: "int[]", expect: "to_json(%[1]s)"},
	{name: "iaa", typ: "int[][]", expect: "to_json(%[1]s)"},
	{name: "ta", typ: "text[]", expect: "to_json(%[1]s)"},
	{name: "tsa", typ: "timestamptz[]", expect: "to_json(%[1]s)", utcZ: true},
	{name: "ja", typ: "jsonb[]", expect: "CASE WHEN %[1]s IS NOT NULL THEN (SELECT coalesce(json_agg(to_json(e::text) ORDER BY n), '[]') FROM unnest(%[1]s) WITH ORDINALITY u(e, n)) END"},
	{name: "ba", typ: "bytea[]", expect: `CASE WHEN %[1]s IS NOT NULL THEN (SELECT coalesce(json_agg(to_json(translate(encode(e, 'base64'), E'\n', '')) ORDER BY n), '[]') FROM unnest(%[1]s) WITH ORDINALITY u(e, n)) END`},
	{name: "na", typ: "numeric[]", expect: "CASE WHEN %[1]s IS NOT NULL THEN (SELECT coalesce(json_agg(to_json(e::text) ORDER BY n), '[]') FROM unnest(%[1]s) WITH ORDINALITY u(e, n)) END"},
	{name: "mood", typ: "{mood}", expect: "to_json(%[1]s)"},
	{name: "moods", typ: "{mood}[]", expect: "to_json(%[1]s)"},
	{name: "pi", typ: "{posint}", expect: "to_json(%[1]s)"},
	{name: "pis", typ: "{posint}[]", expect: "to_json(%[1]s)"},
	{name: "amt", typ: "{amount}", expect: "to_json(%[1]s::text)"},
	{name: "big", typ: "text", expect: "to_json(%[1]s)"},
}

// pgTestRows are the inserted rows: column -> SQL value expression.
var pgTestRows = []map[string]string{
	{
		"id": "1", "i2": "-32768", "i4": "2147483647", "i8": "-9223372036854775808", "o": "4294967295",
		"num": "123456789012345678901234567890.000000000000000000001", "f4": "3.4028235e38", "f8": "0.1",
		"b": "true", "t": `E'quote " backslash \\ newline \n tab \t unicode é 日本 😀 ctrl \x01 \u2028'`,
		"vc": "'varchar'", "bp": "'ab'", "nm": "'some_name'", "ch": "'x'", "mon": "1234.56",
		"ip": "'192.168.1.5/24'", "net": "'10.0.0.0/8'", "mac": "'08:00:2b:01:02:03'",
		"u": "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "x": `'<a b="c">d &amp; e</a>'`,
		"ts": "'2024-01-02 03:04:05.123456'", "tstz": "'2024-01-02 03:04:05.123456+05:30'",
		"d": "'2024-02-29'", "tm": "'03:04:05.5'", "tmtz": "'03:04:05+05:30'",
		"iv": "'1 year 2 months 3 days 04:05:06.5'",
		"js": `'{"a": [1, 2.50, "x"], "b": null}'`, "jsb": `'{"k": "v\"w", "n": 1.0}'`,
		"by": `'\x0001ff7f80'::bytea`, "ia": "'{1,2,3}'", "iaa": "'{{1,NULL},{3,4}}'",
		"ta":  `ARRAY['plain', NULL, 'NULL', 'with "quote"', 'back\slash', '', 'a,b', '{x}', ' sp ', 'é😀']`,
		"tsa": "ARRAY['2024-01-02 03:04:05.5+05:30'::timestamptz, 'infinity', NULL]",
		"ja":  `ARRAY['{"a": 1}'::jsonb, 'null', NULL, '"s"']`, "ba": `ARRAY['\x0102'::bytea, '\x'::bytea, NULL]`,
		"na": "ARRAY[1.50, 'NaN', NULL]::numeric[]", "mood": `'o''dd "q"'`, "moods": `'{happy,"o''dd \"q\"",NULL}'`,
		"pi": "5", "pis": "ARRAY[1, 2]", "amt": "12.5",
		// Out of line (the column's storage is EXTERNAL): an update that
		// does not touch it sends it as unchanged TOAST.
		"big": "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i)",
	},
	{"id": "2", "t": "''"},
	{
		"id": "3", "i8": "0", "num": "'NaN'", "f4": "'-Infinity'", "f8": "'NaN'",
		"ts": "'0044-03-15 12:00:00 BC'", "tstz": "'infinity'", "d": "'-infinity'",
		"iv": "'-1 days -00:00:00.5'", "by": `'\x'::bytea`, "ia": "'{}'", "ta": "'{}'",
		"iaa": "'[0:1]={7,8}'", "big": "'short'", "pis": "'{}'",
	},
}

func TestDecodePgoutput(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	db := e.PG.CreateDB(t)
	conn := typesConn(ctx, t, e.PG.URL(db))
	tt := createTypesTable(ctx, t, conn)
	exec, insert, expectRow := tt.exec, tt.insert, tt.expectRow
	table, tableID := tt.name, tt.ident

	pub := testenv.RandomName("pub")
	slot := testenv.RandomName("slot")
	exec("CREATE PUBLICATION " + pgx.Identifier{pub}.Sanitize() + " FOR TABLE " + tableID)
	rconn := replicationConn(ctx, t, e.PG.URL(db), SessionParams())
	created, err := pglogrepl.CreateReplicationSlot(ctx, rconn, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{})
	if err != nil {
		t.Fatalf("create slot: %v", err)
	}
	startLSN, err := pglogrepl.ParseLSN(created.ConsistentPoint)
	if err != nil {
		t.Fatal(err)
	}

	// The statements, each its own transaction, and what SQL says the
	// decoded columns must be right after each.
	var want []wantChange
	for i, row := range pgTestRows {
		insert(row)
		want = append(want, wantChange{op: pipeline.OpCreate, key: i + 1, after: expectRow(i + 1)})
	}
	exec("UPDATE " + tableID + " SET i4 = i4 - 1, tstz = '2025-06-07 08:09:10+00' WHERE id = 1")
	after := expectRow(1)
	delete(after, "big")
	want = append(want, wantChange{op: pipeline.OpUpdate, key: 1, after: after, unchanged: []string{"big"}})
	exec("UPDATE " + tableID + " SET id = 20 WHERE id = 2")
	want = append(want,
		wantChange{op: pipeline.OpDelete, key: 2, before: keyOnly(2)},
		wantChange{tombstone: true, key: 2},
		wantChange{op: pipeline.OpCreate, key: 20, after: expectRow(20)})
	exec("DELETE FROM " + tableID + " WHERE id = 3")
	want = append(want,
		wantChange{op: pipeline.OpDelete, key: 3, before: keyOnly(3)},
		wantChange{tombstone: true, key: 3})
	// A schema change mid-stream: the next tuple has one more column.
	exec("ALTER TABLE " + tableID + " ADD COLUMN extra text DEFAULT 'dflt', ALTER COLUMN i2 TYPE integer")
	tt.columns = append(append([]pgColumn(nil), pgTestColumns...), pgColumn{name: "extra", expect: "to_json(%[1]s)"})
	exec("INSERT INTO " + tableID + " (id, i2, tstz, d) VALUES (4, 100000, '0044-03-15 12:00:00+00 BC', '0044-03-15 BC')")
	want = append(want, wantChange{op: pipeline.OpCreate, key: 4, after: expectRow(4)})
	exec("TRUNCATE " + tableID)
	want = append(want, wantChange{op: pipeline.OpTruncate})

	types := NewTypes()
	if err := types.LoadTypes(ctx, conn); err != nil {
		t.Fatalf("LoadTypes: %v", err)
	}
	src := SourceInfo{Name: "cdc", DB: db, PrimaryKeys: map[string][]string{"public." + table: {"id"}}}
	got := streamChanges(ctx, t, rconn, slot, pub, startLSN, NewDecoder(src, types), len(want))
	rconn.Close(context.Background())
	checkPgChanges(t, got, want, db, table)

	// Values a session parameter would change are pinned: these literals
	// only come out when SessionParams reached the replication connection.
	if v, _ := got[0].Event.After.Get("iv"); string(v) != `"P1Y2M3DT4H5M6.5S"` {
		t.Errorf("interval = %s, want ISO 8601 duration", v)
	}
	if v, _ := got[0].Event.After.Get("tstz"); string(v) != `"2024-01-01T21:34:05.123456Z"` {
		t.Errorf("timestamptz = %s, want UTC with Z", v)
	}
	if v, _ := got[2].Event.After.Get("f8"); string(v) != `"NaN"` {
		t.Errorf("float8 NaN = %s", v)
	}

	// The same stream read again (nothing was confirmed) by a session whose
	// time zone is +05:30, with types learnt only from the stream: every
	// instant is still in UTC and every value the same, except the
	// documented best-effort cases (BC timestamptz stays as printed, in the
	// session's zone).
	params := SessionParams()
	params["TimeZone"] = "Asia/Kolkata"
	waitSlotInactive(t, conn, slot)
	rconn2 := replicationConn(ctx, t, e.PG.URL(db), params)
	defer rconn2.Close(context.Background())
	types2 := NewTypes()
	again := streamChanges(ctx, t, rconn2, slot, pub, startLSN, NewDecoder(src, types2), len(want))
	for i := range got {
		a, b := got[i], again[i]
		if a.Event == nil || b.Event == nil {
			if (a.Event == nil) != (b.Event == nil) {
				t.Errorf("change %d: tombstone mismatch", i)
			}
			continue
		}
		for _, pair := range [][2]pipeline.Row{{a.Event.After, b.Event.After}, {a.Event.Before, b.Event.Before}} {
			for _, c := range pair[0] {
				v2, _ := pair[1].Get(c.Name)
				if bytes.HasSuffix(c.Value, []byte(` BC"`)) && c.Name == "tstz" {
					continue
				}
				if c.Name == "pi" || c.Name == "pis" {
					// A domain learnt from a Type message alone is a string;
					// LoadTypes makes it its base type.
					continue
				}
				if !bytes.Equal(c.Value, v2) {
					t.Errorf("change %d column %s: UTC session %s, +05:30 session %s", i, c.Name, c.Value, v2)
				}
			}
		}
	}
	if v, _ := again[0].Event.After.Get("moods"); string(v) != `["happy","o'dd \"q\"",null]` {
		t.Errorf("enum array learnt from the stream = %s", v)
	}
	if v, _ := again[0].Event.After.Get("pi"); string(v) != `"5"` {
		t.Errorf("domain learnt from the stream only = %s, want the text as a string", v)
	}
}

type wantChange struct {
	op            pipeline.Op
	key           int // 0: no key (truncate)
	before, after map[string]json.RawMessage
	unchanged     []string
	tombstone     bool
}

// keyOnly is the before image of a delete under the default replica
// identity: the key columns, which is all the old tuple carries.
func keyOnly(id int) map[string]json.RawMessage {
	return map[string]json.RawMessage{"id": json.RawMessage(fmt.Sprint(id))}
}

func replicationConn(ctx context.Context, t *testing.T, url string, params map[string]string) *pgconn.PgConn {
	t.Helper()
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range params {
		cfg.RuntimeParams[k] = v
	}
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("replication connection: %v", err)
	}
	return conn
}

// streamChanges starts replication and decodes until n changes arrived. It
// never confirms a position, so the slot can be read again.
func streamChanges(ctx context.Context, t *testing.T, conn *pgconn.PgConn, slot, pub string, start pglogrepl.LSN, d *Decoder, n int) []Change {
	t.Helper()
	pubList := pgx.Identifier{pub}.Sanitize()
	args := []string{"proto_version '1'", "publication_names '" + strings.ReplaceAll(pubList, "'", "''") + "'", "messages 'true'"}
	if err := pglogrepl.StartReplication(ctx, conn, slot, start, pglogrepl.StartReplicationOptions{PluginArgs: args}); err != nil {
		t.Fatalf("start replication: %v", err)
	}
	var changes []Change
	for len(changes) < n {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		raw, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			t.Fatalf("receive after %d of %d changes: %v", len(changes), n, err)
		}
		cd, ok := raw.(*pgproto3.CopyData)
		if !ok {
			if er, ok := raw.(*pgproto3.ErrorResponse); ok {
				t.Fatalf("replication error: %s", er.Message)
			}
			continue
		}
		switch cd.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:])
			if err != nil {
				t.Fatal(err)
			}
			if ka.ReplyRequested {
				// Report the start as flushed: it keeps the connection
				// alive without confirming anything decoded here.
				err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: start})
				if err != nil {
					t.Fatal(err)
				}
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
			if err != nil {
				t.Fatal(err)
			}
			msg, err := pglogrepl.Parse(xld.WALData)
			if err != nil {
				t.Fatalf("parse pgoutput: %v", err)
			}
			if tm, ok := msg.(*pglogrepl.TypeMessage); ok && tm.DataType < firstNormalOID {
				t.Errorf("Type message for built-in type %d", tm.DataType)
			}
			got, err := d.Decode(msg, xld.WALStart)
			if err != nil {
				t.Fatalf("Decode %T at %s: %v", msg, xld.WALStart, err)
			}
			changes = append(changes, got...)
		}
	}
	if len(changes) != n {
		t.Fatalf("got %d changes, want %d", len(changes), n)
	}
	return changes
}

func checkPgChanges(t *testing.T, got []Change, want []wantChange, db, table string) {
	t.Helper()
	var prev pipeline.Position
	for i, w := range want {
		c := got[i]
		name := fmt.Sprintf("change %d (%s key %d)", i, w.op, w.key)
		if c.Schema != "public" || c.Table != table {
			t.Errorf("%s: table %s.%s", name, c.Schema, c.Table)
		}
		wantKey := "null"
		if w.key != 0 {
			wantKey = fmt.Sprintf(`{"id":%d}`, w.key)
		}
		if k := string(c.Key.AppendJSON(nil)); k != wantKey {
			t.Errorf("%s: key %s, want %s", name, k, wantKey)
		}
		if c.Position.Less(prev) || c.Position.Change > c.Position.Commit {
			t.Errorf("%s: position %v after %v", name, c.Position, prev)
		}
		prev = c.Position
		if w.tombstone {
			if c.Event != nil {
				t.Errorf("%s: want a tombstone, got %s", name, c.Event.AppendJSON(nil))
			}
			if c.Position != got[i-1].Position {
				t.Errorf("%s: tombstone position %v differs from its delete's %v", name, c.Position, got[i-1].Position)
			}
			continue
		}
		ev := c.Event
		if ev == nil {
			t.Errorf("%s: got a tombstone", name)
			continue
		}
		if ev.Op != w.op {
			t.Errorf("%s: op %s", name, ev.Op)
		}
		s := ev.Source
		if s.Connector != "postgresql" || s.Name != "cdc" || s.DB != db || s.Schema != "public" || s.Table != table ||
			s.TxID == 0 || s.Snapshot != "false" || ev.Position() != c.Position || s.TsMs == 0 ||
			time.Since(time.UnixMilli(s.TsMs)) > time.Minute {
			t.Errorf("%s: source %+v, position %v", name, s, c.Position)
		}
		if _, err := pipeline.DecodeEvent(ev.AppendJSON(nil)); err != nil {
			t.Errorf("%s: event does not decode: %v", name, err)
		}
		if !reflect.DeepEqual(ev.Unchanged, w.unchanged) {
			t.Errorf("%s: unchanged %q, want %q", name, ev.Unchanged, w.unchanged)
		}
		compareRow(t, name+" before", ev.Before, w.before)
		compareRow(t, name+" after", ev.After, w.after)
	}
}

// compareRow compares decoded columns with the JSON SQL computed, as JSON
// values (SQL and capture escape strings differently, both correctly).
func compareRow(t *testing.T, name string, got pipeline.Row, want map[string]json.RawMessage) {
	t.Helper()
	if want == nil {
		if got != nil {
			t.Errorf("%s: got %s, want null", name, got.AppendJSON(nil))
		}
		return
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d columns, want %d: %s", name, len(got), len(want), got.AppendJSON(nil))
	}
	for _, c := range got {
		w, ok := want[c.Name]
		if !ok {
			t.Errorf("%s: unexpected column %s", name, c.Name)
			continue
		}
		if !sameJSON(c.Value, w) {
			t.Errorf("%s: column %s = %s, SQL says %s", name, c.Name, c.Value, w)
		}
	}
}

func sameJSON(a, b []byte) bool {
	decode := func(data []byte) (any, bool) {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var v any
		return v, dec.Decode(&v) == nil && !dec.More()
	}
	va, ok1 := decode(a)
	vb, ok2 := decode(b)
	return ok1 && ok2 && reflect.DeepEqual(va, vb)
}

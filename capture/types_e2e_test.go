package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// streamedIDOffset turns the id of a snapshot row into the id of the row
// inserted with the same values after capture started.
const streamedIDOffset = 100

// arrayOfText is the expectation for an array whose elements capture keeps
// as strings: each element's text, NULLs as null. (Subscripts rather than
// unnest, which would expand composite elements into columns.)
const arrayOfText = "CASE WHEN %[1]s IS NOT NULL THEN (SELECT coalesce(json_agg(to_json(%[1]s[i]::text) ORDER BY i), '[]') FROM generate_subscripts(%[1]s, 1) i) END"

// e2eExtraColumns add, to pgTestColumns, types that capture keeps as their
// text (geometric, ranges, composites, full-text, bit strings) and arrays
// of more element kinds, including box[] whose delimiter is ';' and
// money[], which pgx does not know.
var e2eExtraColumns = []pgColumn{
	{name: "pt", typ: "point", expect: "to_json(%[1]s::text)"},
	{name: "bxa", typ: "box[]", expect: arrayOfText},
	{name: "r4", typ: "int4range", expect: "to_json(%[1]s::text)"},
	{name: "tsr", typ: "tsrange", expect: "to_json(%[1]s::text)"},
	{name: "tstzr", typ: "tstzrange", expect: "to_json(%[1]s::text)"},
	{name: "pr", typ: "{pair}", expect: "to_json(%[1]s::text)"},
	{name: "pra", typ: "{pair}[]", expect: arrayOfText},
	{name: "tsv", typ: "tsvector", expect: "to_json(%[1]s::text)"},
	{name: "vb", typ: "bit varying", expect: "to_json(%[1]s::text)"},
	{name: "mona", typ: "money[]", expect: arrayOfText},
	{name: "f8a", typ: "float8[]", expect: "to_json(%[1]s)"},
	{name: "bla", typ: "boolean[]", expect: "to_json(%[1]s)"},
	{name: "tsa2", typ: "timestamp[]", expect: "to_json(%[1]s)"},
	{name: "da", typ: "date[]", expect: "to_json(%[1]s)"},
	{name: "ua", typ: "uuid[]", expect: "to_json(%[1]s)"},
	{name: "i8a", typ: "bigint[]", expect: "to_json(%[1]s)"},
	{name: "iva", typ: "interval[]", expect: arrayOfText},
	{name: "vca", typ: "varchar[]", expect: "to_json(%[1]s)"},
}

// e2eExtraValues are the values of e2eExtraColumns for pgTestRows, by index.
var e2eExtraValues = []map[string]string{
	{
		"pt": "'(1.5,-2)'", "bxa": "ARRAY['((1,2),(3,4))'::box, '((0,0),(-1,-1))'::box, NULL]",
		"r4": "'[1,10)'", "tsr": "'[2024-01-01 00:00,2024-02-01 00:00:00.5)'",
		"tstzr": "'[2024-01-01 00:00+05,)'",
		"pr":    `ROW(1, 'a "b", c\d')`, "pra": `'{"(1,x)","(,\"y z\")",NULL,"(3,\"\")"}'`,
		"tsv": "to_tsvector('simple', 'the quick ''brown'' fox')", "vb": "B'1011'",
		"mona": "ARRAY[1.5, -2, NULL]::money[]", "f8a": "ARRAY[1.5, 'NaN', '-Infinity', 1e300, -0.0, NULL]::float8[]",
		"bla": "ARRAY[true, false, NULL]", "tsa2": "ARRAY['2024-01-02 03:04:05.5', 'infinity', NULL]::timestamp[]",
		"da": "ARRAY['2024-02-29', '-infinity', NULL]::date[]", "ua": "ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, NULL]",
		"i8a": "ARRAY[-9223372036854775808, 9223372036854775807, NULL]", "iva": "ARRAY['1 day'::interval, '-1 month 2 seconds', NULL]",
		"vca": `ARRAY['NULL', 'null', '', '{', '}', ',', '"', '\', ' x ']::varchar[]`,
	},
	{},
	{
		"bxa": "'{}'", "r4": "'empty'", "tsr": "'(,)'", "pr": "ROW(NULL, NULL)", "pra": "'{}'",
		"tsv": "''", "vb": "B''", "mona": "'{}'", "f8a": "'{}'", "tsa2": "'{-infinity}'", "da": "'{}'",
	},
}

// TestTypesE2E runs the capture daemon over a table with a column of every
// type and checks, column by column, that the JSON on the topic is what SQL
// says is in the row, for both paths that produce rows: the initial
// snapshot (simple-protocol text read by the snapshotter) and the stream
// (pgoutput through the decoder). The same values must come out byte for
// byte the same on both paths.
func TestTypesE2E(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	db := e.PG.CreateDB(t)
	// Database defaults unlike every setting capture relies on: its
	// connections (snapshot and replication) must pin their own.
	admin := connect(t, e, db)
	for _, set := range []string{"TimeZone = 'Asia/Kolkata'", "DateStyle = 'SQL, DMY'", "IntervalStyle = 'postgres_verbose'",
		"extra_float_digits = 0", "bytea_output = 'escape'"} {
		mustExec(t, admin, "ALTER DATABASE "+pgx.Identifier{db}.Sanitize()+" SET "+set)
	}
	var tz string
	if err := connect(t, e, db).QueryRow(ctx, "SHOW TimeZone").Scan(&tz); err != nil || tz != "Asia/Kolkata" {
		t.Fatalf("database default TimeZone = %q (%v), want Asia/Kolkata", tz, err)
	}
	conn := typesConn(ctx, t, e.PG.URL(db))
	tt := createTypesTable(ctx, t, conn, e2eExtraColumns...)
	// pgoutput never sends generated columns (Postgres 15-17, and 18 unless
	// the publication asks for them), so the snapshot must leave them out
	// too: tt.columns does not list it, so no event may carry it.
	tt.exec("ALTER TABLE " + tt.ident + " ADD COLUMN gen bigint GENERATED ALWAYS AS (id * 2) STORED")

	// pgTestRows with values for the extra columns, and a row that is NULL
	// in every column but the key.
	var rows []map[string]string
	for i, row := range pgTestRows {
		rows = append(rows, maps.Clone(row))
		if i < len(e2eExtraValues) {
			maps.Copy(rows[i], e2eExtraValues[i])
		}
	}
	rows = append(rows, map[string]string{"id": fmt.Sprint(len(rows) + 1)})

	// Rows present before capture starts come out of the snapshot.
	want := map[int]map[string]json.RawMessage{} // of "r" and "c" events by key
	for i, row := range rows {
		id := i + 1
		tt.insert(row)
		want[id] = tt.expectRow(id)
	}

	cfg := testConfig(e, db, "public."+tt.name)
	cfg.Snapshot = "initial"
	topic := pipeline.Topic(cfg.TopicPrefix, "public", tt.name)
	stop := startCapture(t, cfg)
	// Wait for the snapshot so that the next rows are certainly streamed.
	waitFor(t, 30*time.Second, "snapshot rows", func() bool {
		return topicCount(t, e.Kafka.Brokers(), topic) >= int64(len(rows))
	})

	// The same values again, one transaction each, now streamed.
	for i, row := range rows {
		id := i + 1 + streamedIDOffset
		streamed := maps.Clone(row)
		streamed["id"] = fmt.Sprint(id)
		tt.insert(streamed)
		want[id] = tt.expectRow(id)
	}
	// An update leaving the out-of-line column alone: pgoutput sends it as
	// unchanged TOAST, so it must be absent from after and named.
	tt.exec("UPDATE " + tt.ident + " SET i4 = i4 - 1, tstz = '2025-06-07 08:09:10+00' WHERE id = 1")
	wantUpdate := tt.expectRow(1)
	delete(wantUpdate, "big")

	total := 2*len(rows) + 1
	waitFor(t, 30*time.Second, "streamed changes", func() bool {
		return topicCount(t, e.Kafka.Brokers(), topic) >= int64(total)
	})
	if err := stop(); err != nil {
		t.Fatalf("capture stopped with %v", err)
	}

	msgs := readTopic(t, e.Kafka.Brokers(), topic)
	if len(msgs) != total {
		t.Fatalf("%d messages on %s, want %d", len(msgs), topic, total)
	}
	byOp := map[pipeline.Op]map[int]*pipeline.Event{}
	var snapshotPos pipeline.Position
	txIDs := map[uint32]int{}
	for _, m := range msgs {
		ev := m.Event
		if ev == nil {
			t.Fatalf("unexpected tombstone for key %v", m.Key)
		}
		id, ok := keyID(m.Key)
		if !ok {
			t.Fatalf("%s event: key %#v, want {\"id\":<integer>}", ev.Op, m.Key)
		}
		name := fmt.Sprintf("%s event of id %d", ev.Op, id)
		if byOp[ev.Op] == nil {
			byOp[ev.Op] = map[int]*pipeline.Event{}
		}
		if byOp[ev.Op][id] != nil {
			t.Errorf("%s: twice", name)
		}
		byOp[ev.Op][id] = ev
		// The key holds what after says the key column is.
		if v, _ := ev.After.Get("id"); string(v) != fmt.Sprint(id) {
			t.Errorf("%s: after.id = %s", name, v)
		}
		if pos, err := pipeline.ParsePosition(m.Headers[pipeline.HeaderPosition]); err != nil || pos != ev.Position() {
			t.Errorf("%s: position header %q, event position %v", name, m.Headers[pipeline.HeaderPosition], ev.Position())
		}
		if m.Headers[pipeline.HeaderOp] != string(ev.Op) {
			t.Errorf("%s: op header %q", name, m.Headers[pipeline.HeaderOp])
		}
		s := ev.Source
		if s.Connector != "postgresql" || s.Name != cfg.TopicPrefix || s.DB != db || s.Schema != "public" || s.Table != tt.name {
			t.Errorf("%s: source %+v", name, s)
		}
		if s.LSN == 0 || s.CommitLSN == 0 || s.LSN > s.CommitLSN {
			t.Errorf("%s: lsn %d, commit_lsn %d", name, s.LSN, s.CommitLSN)
		}
		if s.TsMs == 0 || ev.TsMs == 0 || time.Since(time.UnixMilli(s.TsMs)) > time.Minute {
			t.Errorf("%s: ts_ms %d, source.ts_ms %d", name, ev.TsMs, s.TsMs)
		}
		if ev.Before != nil {
			t.Errorf("%s: before %s, want null (default replica identity, key unchanged)", name, ev.Before.AppendJSON(nil))
		}
		switch ev.Op {
		case pipeline.OpRead:
			// Snapshot rows carry the slot's consistent point, one position
			// for all, and Debezium's marks: the first row "first", the
			// last "last", the others "true" (one table).
			wantMark := "true"
			switch id {
			case 1:
				wantMark = "first"
			case len(rows):
				wantMark = "last"
			}
			if s.Snapshot != wantMark {
				t.Errorf("%s: source.snapshot %q, want %q", name, s.Snapshot, wantMark)
			}
			if s.LSN != s.CommitLSN || (snapshotPos != pipeline.Position{} && ev.Position() != snapshotPos) {
				t.Errorf("%s: position %v, other snapshot rows %v", name, ev.Position(), snapshotPos)
			}
			snapshotPos = ev.Position()
		case pipeline.OpCreate, pipeline.OpUpdate:
			if s.Snapshot != "false" {
				t.Errorf("%s: source.snapshot %q, want \"false\"", name, s.Snapshot)
			}
			if s.TxID == 0 {
				t.Errorf("%s: txId 0", name)
			}
			txIDs[s.TxID]++
		default:
			t.Errorf("%s: unexpected op", name)
		}
	}

	// Every column of every row is what SQL says.
	check := func(op pipeline.Op, id int, after map[string]json.RawMessage, unchanged []string) *pipeline.Event {
		t.Helper()
		name := fmt.Sprintf("%s event of id %d", op, id)
		ev := byOp[op][id]
		if ev == nil {
			t.Errorf("%s: missing", name)
			return nil
		}
		if !slices.Equal(ev.Unchanged, unchanged) {
			t.Errorf("%s: unchanged %q, want %q", name, ev.Unchanged, unchanged)
		}
		compareRow(t, name+" after", ev.After, after)
		return ev
	}
	for i := range rows {
		id := i + 1
		snap := check(pipeline.OpRead, id, want[id], nil)
		live := check(pipeline.OpCreate, id+streamedIDOffset, want[id+streamedIDOffset], nil)
		if snap == nil || live == nil {
			continue
		}
		if !snapshotPos.Less(live.Position()) {
			t.Errorf("streamed id %d at %v, not after the snapshot's %v", id+streamedIDOffset, live.Position(), snapshotPos)
		}
		// Same values, same bytes, in the same column order, whichever
		// path read them.
		if len(snap.After) != len(live.After) {
			t.Errorf("id %d: snapshot has %d columns, stream %d", id, len(snap.After), len(live.After))
			continue
		}
		for j, sc := range snap.After {
			lc := live.After[j]
			if sc.Name != lc.Name {
				t.Errorf("id %d: column %d is %s in the snapshot, %s in the stream", id, j, sc.Name, lc.Name)
				continue
			}
			if sc.Name != "id" && !bytes.Equal(sc.Value, lc.Value) {
				t.Errorf("id %d column %s: snapshot %s, stream %s", id, sc.Name, sc.Value, lc.Value)
			}
		}
	}
	check(pipeline.OpUpdate, 1, wantUpdate, []string{"big"})
	for tx, n := range txIDs {
		if n != 1 {
			t.Errorf("txId %d on %d events; every streamed change was its own transaction", tx, n)
		}
	}

	// The all-NULL row really is NULL in every column on both paths.
	nullID := len(rows)
	for _, id := range []int{nullID, nullID + streamedIDOffset} {
		for col, v := range want[id] {
			if col != "id" && string(v) != "null" {
				t.Errorf("SQL expectation for id %d column %s = %s, want null", id, col, v)
			}
		}
	}
}

// keyID returns the id of a key {"id":<integer>} as readTopic decodes it
// (a json.Number, or a float64 without UseNumber); a string is not a key
// capture may produce for a bigint.
func keyID(key map[string]any) (int, bool) {
	if len(key) != 1 {
		return 0, false
	}
	var text string
	switch v := key["id"].(type) {
	case json.Number:
		text = v.String()
	case float64:
		text = strconv.FormatFloat(v, 'f', -1, 64)
	default:
		return 0, false
	}
	id, err := strconv.Atoi(text)
	return id, err == nil
}

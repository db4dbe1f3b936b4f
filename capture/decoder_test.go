package capture

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/cdcsync/cdcsync/pipeline"
)

// Hand-built pgoutput messages, as pglogrepl.Parse returns them.

func testRelation(id uint32, schema, table string, cols ...*pglogrepl.RelationMessageColumn) *pglogrepl.RelationMessage {
	return &pglogrepl.RelationMessage{RelationID: id, Namespace: schema, RelationName: table,
		ReplicaIdentity: 'd', ColumnNum: uint16(len(cols)), Columns: cols}
}

func relCol(name string, oid uint32) *pglogrepl.RelationMessageColumn {
	return &pglogrepl.RelationMessageColumn{Name: name, DataType: oid, TypeModifier: -1}
}

func relKeyCol(name string, oid uint32) *pglogrepl.RelationMessageColumn {
	c := relCol(name, oid)
	c.Flags = 1
	return c
}

func testTuple(cols ...*pglogrepl.TupleDataColumn) *pglogrepl.TupleData {
	return &pglogrepl.TupleData{ColumnNum: uint16(len(cols)), Columns: cols}
}

func tupText(s string) *pglogrepl.TupleDataColumn {
	return &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeText, Length: uint32(len(s)), Data: []byte(s)}
}

func tupNull() *pglogrepl.TupleDataColumn {
	return &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeNull}
}

func tupToast() *pglogrepl.TupleDataColumn {
	return &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeToast}
}

const (
	testXid       = 731
	testCommitLSN = pglogrepl.LSN(0x1_0000_2000)
	testNowMs     = 1_700_000_000_123
)

var testCommitTime = time.Date(2024, 5, 6, 7, 8, 9, 10_000_000, time.UTC)

func testBegin() *pglogrepl.BeginMessage {
	return &pglogrepl.BeginMessage{FinalLSN: testCommitLSN, CommitTime: testCommitTime, Xid: testXid}
}

// newTestDecoder returns a decoder for an orders-like table (relation 1)
// inside an open transaction, with a fixed processing time.
func newTestDecoder(t *testing.T, src SourceInfo) *Decoder {
	t.Helper()
	if src.Name == "" {
		src.Name = "cdc"
		src.DB = "shop"
	}
	d := NewDecoder(src, NewTypes())
	d.now = func() time.Time { return time.UnixMilli(testNowMs) }
	decodeOK(t, d, testRelation(1, "public", "orders",
		relKeyCol("id", pgtype.Int8OID), relCol("status", pgtype.TextOID), relCol("note", pgtype.TextOID)), 0)
	decodeOK(t, d, testBegin(), 0)
	return d
}

func decodeOK(t *testing.T, d *Decoder, m pglogrepl.Message, walStart pglogrepl.LSN) []Change {
	t.Helper()
	changes, err := d.Decode(m, walStart)
	if err != nil {
		t.Fatalf("Decode(%T): %v", m, err)
	}
	return changes
}

// wantSource is the source block every test event on relation 1 carries.
func wantTestSource(lsn pglogrepl.LSN) string {
	return `"source":{"connector":"postgresql","name":"cdc","db":"shop","schema":"public","table":"orders","txId":731,` +
		`"lsn":` + strconv.FormatUint(uint64(lsn), 10) + `,"commit_lsn":` + strconv.FormatUint(uint64(testCommitLSN), 10) + `,"ts_ms":1714979289010,"snapshot":"false","version":"3.1.3.Final","ts_us":1714979289010000,"ts_ns":1714979289010000000,"sequence":"[null,\"` +
		strconv.FormatUint(uint64(lsn), 10) + `\"]","xmin":null}`
}

// checkDecoded compares a change with its expected key and event JSON (""
// for a tombstone) and checks its position.
func checkDecoded(t *testing.T, c Change, walStart pglogrepl.LSN, wantKey, wantEvent string) {
	t.Helper()
	if c.Schema != "public" || c.Table != "orders" {
		t.Errorf("change table = %s.%s, want public.orders", c.Schema, c.Table)
	}
	if got := string(c.Key.AppendJSON(nil)); got != wantKey {
		t.Errorf("key = %s, want %s", got, wantKey)
	}
	if want := (pipeline.Position{Commit: testCommitLSN, Change: walStart}); c.Position != want {
		t.Errorf("position = %v, want %v", c.Position, want)
	}
	if wantEvent == "" {
		if c.Event != nil {
			t.Errorf("want a tombstone, got event %s", c.Event.AppendJSON(nil))
		}
		return
	}
	if c.Event == nil {
		t.Fatalf("got a tombstone, want event %s", wantEvent)
	}
	if got := string(c.Event.AppendJSON(nil)); got != wantEvent {
		t.Errorf("event =\n%s\nwant\n%s", got, wantEvent)
	}
	if c.Event.Position() != c.Position {
		t.Errorf("event position %v != change position %v", c.Event.Position(), c.Position)
	}
	if _, err := pipeline.DecodeEvent(c.Event.AppendJSON(nil)); err != nil {
		t.Errorf("event does not decode: %v", err)
	}
}

func TestDecodeInsert(t *testing.T) {
	d := newTestDecoder(t, SourceInfo{})
	changes := decodeOK(t, d, &pglogrepl.InsertMessage{RelationID: 1,
		Tuple: testTuple(tupText("42"), tupText("created"), tupNull())}, 0x1_0000_1000)
	if len(changes) != 1 {
		t.Fatalf("got %d changes, want 1", len(changes))
	}
	checkDecoded(t, changes[0], 0x1_0000_1000, `{"id":42}`,
		`{"before":null,"after":{"id":42,"status":"created","note":null},`+wantTestSource(0x1_0000_1000)+`,"op":"c","ts_ms":1700000000123}`)

	if c := decodeOK(t, d, &pglogrepl.CommitMessage{CommitLSN: testCommitLSN}, 0x1_0000_2000); c != nil {
		t.Errorf("commit yielded %d changes", len(c))
	}
	_, err := d.Decode(&pglogrepl.InsertMessage{RelationID: 1, Tuple: testTuple(tupText("1"), tupText("x"), tupNull())}, 0x1_0000_3000)
	if !errors.Is(err, ErrNoTransaction) {
		t.Errorf("insert after commit: err = %v, want ErrNoTransaction", err)
	}
}

func TestDecodeValuesOutliveNextRow(t *testing.T) {
	d := newTestDecoder(t, SourceInfo{})
	first := decodeOK(t, d, &pglogrepl.InsertMessage{RelationID: 1, Tuple: testTuple(tupText("1"), tupText("aaaa"), tupText("n1"))}, 10)
	decodeOK(t, d, &pglogrepl.InsertMessage{RelationID: 1, Tuple: testTuple(tupText("2"), tupText("bbbb"), tupText("n2"))}, 11)
	if got := string(first[0].Event.AppendJSON(nil)); !strings.Contains(got, `"after":{"id":1,"status":"aaaa","note":"n1"}`) {
		t.Errorf("first row changed after decoding the second: %s", got)
	}
	// Appending to a handed-out value must not overwrite its neighbour.
	v, _ := first[0].Event.After.Get("id")
	_ = append(v, 'X')
	if got, _ := first[0].Event.After.Get("status"); string(got) != `"aaaa"` {
		t.Errorf("status = %s after appending to id", got)
	}
}

func TestDecodeUpdateDefaultIdentity(t *testing.T) {
	d := newTestDecoder(t, SourceInfo{})
	changes := decodeOK(t, d, &pglogrepl.UpdateMessage{RelationID: 1,
		NewTuple: testTuple(tupText("42"), tupText("paid"), tupText("n"))}, 500)
	if len(changes) != 1 {
		t.Fatalf("got %d changes, want 1", len(changes))
	}
	checkDecoded(t, changes[0], 500, `{"id":42}`,
		`{"before":null,"after":{"id":42,"status":"paid","note":"n"},`+wantTestSource(500)+`,"op":"u","ts_ms":1700000000123}`)
}

func TestDecodeUpdateUnchangedToast(t *testing.T) {
	d := newTestDecoder(t, SourceInfo{})
	changes := decodeOK(t, d, &pglogrepl.UpdateMessage{RelationID: 1,
		NewTuple: testTuple(tupText("42"), tupText("paid"), tupToast())}, 500)
	checkDecoded(t, changes[0], 500, `{"id":42}`,
		`{"before":null,"after":{"id":42,"status":"paid"},"unchanged":["note"],`+wantTestSource(500)+`,"op":"u","ts_ms":1700000000123}`)
}

func TestDecodeUpdateFullIdentity(t *testing.T) {
	d := newTestDecoder(t, SourceInfo{})
	// REPLICA IDENTITY FULL: the old tuple carries the TOASTed value, which
	// fills the new tuple's unchanged column.
	changes := decodeOK(t, d, &pglogrepl.UpdateMessage{RelationID: 1,
		OldTupleType: pglogrepl.UpdateMessageTupleTypeOld,
		OldTuple:     testTuple(tupText("42"), tupText("created"), tupText("long text")),
		NewTuple:     testTuple(tupText("42"), tupText("paid"), tupToast())}, 500)
	if len(changes) != 1 {
		t.Fatalf("got %d changes, want 1", len(changes))
	}
	checkDecoded(t, changes[0], 500, `{"id":42}`,
		`{"before":{"id":42,"status":"created","note":"long text"},"after":{"id":42,"status":"paid","note":"long text"},`+
			wantTestSource(500)+`,"op":"u","ts_ms":1700000000123}`)
}

func TestDecodeDelete(t *testing.T) {
	d := newTestDecoder(t, SourceInfo{})
	changes := decodeOK(t, d, &pglogrepl.DeleteMessage{RelationID: 1,
		OldTupleType: pglogrepl.DeleteMessageTupleTypeKey, OldTuple: testTuple(tupText("42"), tupNull(), tupNull())}, 600)
	if len(changes) != 2 {
		t.Fatalf("got %d changes, want delete + tombstone", len(changes))
	}
	checkDecoded(t, changes[0], 600, `{"id":42}`,
		`{"before":{"id":42},"after":null,`+wantTestSource(600)+`,"op":"d","ts_ms":1700000000123}`)
	checkDecoded(t, changes[1], 600, `{"id":42}`, "")
}

func TestDecodePrimaryKeyChange(t *testing.T) {
	d := newTestDecoder(t, SourceInfo{})
	changes := decodeOK(t, d, &pglogrepl.UpdateMessage{RelationID: 1,
		OldTupleType: pglogrepl.UpdateMessageTupleTypeKey, OldTuple: testTuple(tupText("42"), tupNull(), tupNull()),
		NewTuple: testTuple(tupText("43"), tupText("paid"), tupText("n"))}, 700)
	if len(changes) != 3 {
		t.Fatalf("got %d changes, want delete, tombstone, create", len(changes))
	}
	checkDecoded(t, changes[0], 700, `{"id":42}`,
		`{"before":{"id":42},"after":null,`+wantTestSource(700)+`,"op":"d","ts_ms":1700000000123}`)
	checkDecoded(t, changes[1], 700, `{"id":42}`, "")
	checkDecoded(t, changes[2], 700, `{"id":43}`,
		`{"before":null,"after":{"id":43,"status":"paid","note":"n"},`+wantTestSource(700)+`,"op":"c","ts_ms":1700000000123}`)

	// A 'K' tuple with the same key (sent because the key is stored out of
	// line) is an ordinary update.
	changes = decodeOK(t, d, &pglogrepl.UpdateMessage{RelationID: 1,
		OldTupleType: pglogrepl.UpdateMessageTupleTypeKey, OldTuple: testTuple(tupText("43"), tupNull(), tupNull()),
		NewTuple: testTuple(tupText("43"), tupText("shipped"), tupToast())}, 800)
	if len(changes) != 1 || changes[0].Event.Op != pipeline.OpUpdate || changes[0].Event.Before != nil {
		t.Fatalf("same-key update with K tuple: got %d changes, first %+v", len(changes), changes[0].Event)
	}
}

func TestDecodeCompositeKeyFromCatalog(t *testing.T) {
	// The catalog's key order (tenant, id) differs from the table order;
	// the catalog wins.
	d := newTestDecoder(t, SourceInfo{PrimaryKeys: map[string][]string{"public.lines": {"tenant", "id"}}})
	decodeOK(t, d, testRelation(2, "public", "lines",
		relKeyCol("id", pgtype.Int4OID), relCol("sku", pgtype.TextOID), relKeyCol("tenant", pgtype.TextOID)), 0)
	changes := decodeOK(t, d, &pglogrepl.InsertMessage{RelationID: 2, Tuple: testTuple(tupText("5"), tupText("s"), tupText("acme"))}, 900)
	if got := string(changes[0].Key.AppendJSON(nil)); got != `{"tenant":"acme","id":5}` {
		t.Errorf("key = %s", got)
	}
	// The replica identity changed to an index on sku while capture ran:
	// deletes carry only sku now, so the stream's flags key the events.
	rel := testRelation(2, "public", "lines",
		relCol("id", pgtype.Int4OID), relKeyCol("sku", pgtype.TextOID), relCol("tenant", pgtype.TextOID))
	rel.ReplicaIdentity = 'i'
	decodeOK(t, d, rel, 0)
	changes = decodeOK(t, d, &pglogrepl.DeleteMessage{RelationID: 2, OldTupleType: pglogrepl.DeleteMessageTupleTypeKey,
		OldTuple: testTuple(tupNull(), tupText("s"), tupNull())}, 901)
	if got := string(changes[0].Key.AppendJSON(nil)); got != `{"sku":"s"}` {
		t.Errorf("key after an identity change = %s", got)
	}
	// A catalog key naming a column the stream does not have falls back to
	// the flags.
	d = newTestDecoder(t, SourceInfo{PrimaryKeys: map[string][]string{"public.orders": {"gone"}}})
	changes = decodeOK(t, d, &pglogrepl.InsertMessage{RelationID: 1, Tuple: testTuple(tupText("7"), tupText("x"), tupNull())}, 900)
	if got := string(changes[0].Key.AppendJSON(nil)); got != `{"id":7}` {
		t.Errorf("fallback key = %s", got)
	}
}

func TestDecodeTruncate(t *testing.T) {
	d := newTestDecoder(t, SourceInfo{})
	decodeOK(t, d, testRelation(2, "sales", "lines", relKeyCol("id", pgtype.Int4OID)), 0)
	changes := decodeOK(t, d, &pglogrepl.TruncateMessage{RelationNum: 2, RelationIDs: []uint32{1, 2}}, 1000)
	if len(changes) != 2 {
		t.Fatalf("got %d changes, want 2", len(changes))
	}
	checkDecoded(t, changes[0], 1000, "null",
		`{"before":null,"after":null,`+wantTestSource(1000)+`,"op":"t","ts_ms":1700000000123}`)
	if c := changes[1]; c.Schema != "sales" || c.Table != "lines" || c.Key != nil || c.Event.Op != pipeline.OpTruncate ||
		c.Event.Source.Table != "lines" || c.Event.Source.Schema != "sales" {
		t.Errorf("second truncate change = %+v, event %+v", c, c.Event)
	}
	if _, err := d.Decode(&pglogrepl.TruncateMessage{RelationNum: 1, RelationIDs: []uint32{9}}, 1001); !errors.Is(err, ErrUnknownRelation) {
		t.Errorf("truncate of unknown relation: err = %v", err)
	}
}

func TestDecodeRelationChangeMidStream(t *testing.T) {
	d := newTestDecoder(t, SourceInfo{})
	decodeOK(t, d, &pglogrepl.InsertMessage{RelationID: 1, Tuple: testTuple(tupText("1"), tupText("a"), tupNull())}, 10)
	// ALTER TABLE orders ADD COLUMN qty int, ALTER COLUMN note TYPE jsonb:
	// pgoutput sends the new definition before the next tuple.
	decodeOK(t, d, testRelation(1, "public", "orders",
		relKeyCol("id", pgtype.Int8OID), relCol("status", pgtype.TextOID), relCol("note", pgtype.JSONBOID), relCol("qty", pgtype.Int4OID)), 11)
	changes := decodeOK(t, d, &pglogrepl.InsertMessage{RelationID: 1,
		Tuple: testTuple(tupText("2"), tupText("b"), tupText(`{"x": 1}`), tupText("3"))}, 12)
	after := string(changes[0].Event.After.AppendJSON(nil))
	if after != `{"id":2,"status":"b","note":"{\"x\": 1}","qty":3}` {
		t.Errorf("after the relation change: %s", after)
	}
	// A tuple of the old shape no longer fits.
	_, err := d.Decode(&pglogrepl.InsertMessage{RelationID: 1, Tuple: testTuple(tupText("3"), tupText("c"), tupNull())}, 13)
	if err == nil || !strings.Contains(err.Error(), "3 columns") {
		t.Errorf("old-shape tuple: err = %v", err)
	}
}

func TestDecodeTypeMessage(t *testing.T) {
	d := newTestDecoder(t, SourceInfo{})
	decodeOK(t, d, &pglogrepl.TypeMessage{DataType: 80000, Namespace: "public", Name: "mood"}, 0)
	decodeOK(t, d, &pglogrepl.TypeMessage{DataType: 80001, Namespace: "public", Name: "_mood"}, 0)
	decodeOK(t, d, testRelation(3, "public", "people",
		relKeyCol("id", pgtype.Int4OID), relCol("mood", 80000), relCol("moods", 80001)), 0)
	changes := decodeOK(t, d, &pglogrepl.InsertMessage{RelationID: 3,
		Tuple: testTuple(tupText("1"), tupText("ok"), tupText(`{ok,"not ok"}`))}, 20)
	if got := string(changes[0].Event.After.AppendJSON(nil)); got != `{"id":1,"mood":"ok","moods":["ok","not ok"]}` {
		t.Errorf("after = %s", got)
	}
}

func TestDecodeTypesLearntAfterRelation(t *testing.T) {
	d := newTestDecoder(t, SourceInfo{})
	decodeOK(t, d, testRelation(3, "public", "people", relKeyCol("id", pgtype.Int4OID), relCol("tags", 80001)), 0)
	changes := decodeOK(t, d, &pglogrepl.InsertMessage{RelationID: 3, Tuple: testTuple(tupText("1"), tupText(`{a,b}`))}, 20)
	if got := string(changes[0].Event.After.AppendJSON(nil)); got != `{"id":1,"tags":"{a,b}"}` {
		t.Errorf("unknown type: after = %s", got)
	}
	d.types.AddType(80001, "public", "_tag")
	changes = decodeOK(t, d, &pglogrepl.InsertMessage{RelationID: 3, Tuple: testTuple(tupText("1"), tupText(`{a,b}`))}, 21)
	if got := string(changes[0].Event.After.AppendJSON(nil)); got != `{"id":1,"tags":["a","b"]}` {
		t.Errorf("after the type became known: after = %s", got)
	}
}

func TestDecodeErrors(t *testing.T) {
	d := newTestDecoder(t, SourceInfo{})
	binary := &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeBinary, Length: 8, Data: make([]byte, 8)}
	cases := []struct {
		name string
		msg  pglogrepl.Message
		want error
	}{
		{"binary column", &pglogrepl.InsertMessage{RelationID: 1, Tuple: testTuple(binary, tupText("a"), tupNull())}, ErrBinaryColumn},
		{"unknown relation insert", &pglogrepl.InsertMessage{RelationID: 99, Tuple: testTuple(tupText("1"))}, ErrUnknownRelation},
		{"unknown relation update", &pglogrepl.UpdateMessage{RelationID: 99, NewTuple: testTuple(tupText("1"))}, ErrUnknownRelation},
		{"unknown relation delete", &pglogrepl.DeleteMessage{RelationID: 99, OldTuple: testTuple(tupText("1"))}, ErrUnknownRelation},
		{"bad int", &pglogrepl.InsertMessage{RelationID: 1, Tuple: testTuple(tupText("x"), tupText("a"), tupNull())}, errBadValue},
	}
	for _, c := range cases {
		changes, err := d.Decode(c.msg, 1)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
		if changes != nil {
			t.Errorf("%s: changes returned with the error", c.name)
		}
	}
	if _, err := d.Decode(&pglogrepl.StreamStartMessageV2{Xid: 1}, 1); err == nil {
		t.Error("a protocol v2 message: want an error")
	}
	// The decoder keeps working after an error.
	if changes := decodeOK(t, d, &pglogrepl.InsertMessage{RelationID: 1, Tuple: testTuple(tupText("1"), tupText("a"), tupNull())}, 2); len(changes) != 1 {
		t.Errorf("after errors: %d changes", len(changes))
	}
}

func TestDecodeIgnoredMessages(t *testing.T) {
	d := newTestDecoder(t, SourceInfo{})
	for _, m := range []pglogrepl.Message{
		&pglogrepl.OriginMessage{Name: "x"},
		&pglogrepl.LogicalDecodingMessage{Prefix: "p", Content: []byte("c")},
	} {
		if changes := decodeOK(t, d, m, 5); changes != nil {
			t.Errorf("%T yielded changes", m)
		}
	}
}

// BenchmarkDecodeInsert decodes an insert of a narrow orders row, the
// common case capture must keep up with.
func BenchmarkDecodeInsert(b *testing.B) {
	d := NewDecoder(SourceInfo{Name: "cdc", DB: "shop"}, NewTypes())
	setup := []pglogrepl.Message{
		testRelation(1, "public", "orders", relKeyCol("id", pgtype.Int8OID), relCol("item_id", pgtype.Int8OID),
			relCol("quantity", pgtype.Int4OID), relCol("status", pgtype.TextOID), relCol("created_at", pgtype.TimestamptzOID)),
		testBegin(),
	}
	for _, m := range setup {
		if _, err := d.Decode(m, 0); err != nil {
			b.Fatal(err)
		}
	}
	msg := &pglogrepl.InsertMessage{RelationID: 1, Tuple: testTuple(tupText("123456"), tupText("789"), tupText("3"), tupText("created"),
		tupText("2024-01-02 03:04:05.123456+00"))}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Decode(msg, 100); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseDecodeInsert includes pglogrepl.Parse of the wire message,
// i.e. the whole per-row cost of decoding in capture.
func BenchmarkParseDecodeInsert(b *testing.B) {
	d := NewDecoder(SourceInfo{Name: "cdc", DB: "shop"}, NewTypes())
	for _, m := range []pglogrepl.Message{
		testRelation(1, "public", "orders", relKeyCol("id", pgtype.Int8OID), relCol("item_id", pgtype.Int8OID),
			relCol("quantity", pgtype.Int4OID), relCol("status", pgtype.TextOID), relCol("created_at", pgtype.TimestamptzOID)),
		testBegin(),
	} {
		if _, err := d.Decode(m, 0); err != nil {
			b.Fatal(err)
		}
	}
	wire := []byte{'I', 0, 0, 0, 1, 'N', 0, 5}
	for _, v := range []string{"123456", "789", "3", "created", "2024-01-02 03:04:05.123456+00"} {
		wire = append(wire, 't', 0, 0, 0, byte(len(v)))
		wire = append(wire, v...)
	}
	b.ReportAllocs()
	for b.Loop() {
		msg, err := pglogrepl.Parse(wire)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := d.Decode(msg, 100); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecodeErrorsNameWhereNotWhat: a value the decoder rejects may be
// personal data, and decode errors end up in logs, so an error names the
// table, column, type, column position and stream position, never the value.
func TestDecodeErrorsNameWhereNotWhat(t *testing.T) {
	const secret = "alice@example.com"
	d := newTestDecoder(t, SourceInfo{})
	decodeOK(t, d, testRelation(7, "crm", "people", relKeyCol("id", pgtype.Int8OID), relCol("age", pgtype.Int4OID),
		relCol("vip", pgtype.BoolOID), relCol("score", pgtype.Float8OID), relCol("codes", pgtype.Int4ArrayOID)), 0)
	decodeOK(t, d, &pglogrepl.BeginMessage{Xid: 9, FinalLSN: 0x2000}, 0)
	cases := []struct {
		name string
		tup  *pglogrepl.TupleData
		want []string
	}{
		{"integer", testTuple(tupText("1"), tupText(secret), tupText("t"), tupText("1.5"), tupText("{1}")),
			[]string{`crm.people`, `column "age"`, "type int4", "position 2", "0/1F00"}},
		{"boolean", testTuple(tupText("1"), tupText("3"), tupText(secret), tupText("1.5"), tupText("{1}")),
			[]string{`column "vip"`, "type bool", "position 3"}},
		{"float", testTuple(tupText("1"), tupText("3"), tupText("t"), tupText(secret), tupText("{1}")),
			[]string{`column "score"`, "type float8", "position 4"}},
		{"array element", testTuple(tupText("1"), tupText("3"), tupText("t"), tupText("1.5"), tupText("{1,"+secret+"}")),
			[]string{`column "codes"`, "type _int4", "position 5"}},
		{"array syntax", testTuple(tupText("1"), tupText("3"), tupText("t"), tupText("1.5"), tupText("{1,\""+secret)),
			[]string{`column "codes"`, "unterminated"}},
		{"array tail", testTuple(tupText("1"), tupText("3"), tupText("t"), tupText("1.5"), tupText("{1}"+secret)),
			[]string{`column "codes"`, "after the closing brace"}},
	}
	for _, c := range cases {
		_, err := d.Decode(&pglogrepl.InsertMessage{RelationID: 7, Tuple: c.tup}, 0x1F00)
		if !errors.Is(err, errBadValue) {
			t.Fatalf("%s: err = %v, want errBadValue", c.name, err)
		}
		msg := err.Error()
		if strings.Contains(msg, "alice") || strings.Contains(msg, "example") {
			t.Errorf("%s: the error quotes the value: %s", c.name, msg)
		}
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: error %q does not name %q", c.name, msg, w)
			}
		}
	}
	// The snapshot's path (Types.AppendJSON) names the type and not the value either.
	_, err := NewTypes().AppendJSON(nil, pgtype.Int4OID, []byte(secret))
	if err == nil || strings.Contains(err.Error(), "alice") || !strings.Contains(err.Error(), "int4") {
		t.Errorf("AppendJSON: err = %v", err)
	}
}

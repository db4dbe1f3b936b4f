package debezium

import (
	"strings"
	"testing"

	"github.com/cdcsync/cdcsync/pipeline"
)

// debezium313Update is an update event Debezium 3.1.3.Final's PostgreSQL
// connector wrote through JsonConverter (schemas enabled) for the tutorial's
// inventory.customers table (id serial), as published in a public
// walk-through; cdcsync must write the same bytes.
const debezium313Update = `{"schema":{"type":"struct","fields":[{"type":"struct","fields":[{"type":"int32","optional":false,"default":0,"field":"id"},{"type":"string","optional":false,"field":"first_name"},{"type":"string","optional":false,"field":"last_name"},{"type":"string","optional":false,"field":"email"}],"optional":true,"name":"dbserver1.inventory.customers.Value","field":"before"},{"type":"struct","fields":[{"type":"int32","optional":false,"default":0,"field":"id"},{"type":"string","optional":false,"field":"first_name"},{"type":"string","optional":false,"field":"last_name"},{"type":"string","optional":false,"field":"email"}],"optional":true,"name":"dbserver1.inventory.customers.Value","field":"after"},{"type":"struct","fields":[{"type":"string","optional":false,"field":"version"},{"type":"string","optional":false,"field":"connector"},{"type":"string","optional":false,"field":"name"},{"type":"int64","optional":false,"field":"ts_ms"},{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"default":"false","field":"snapshot"},{"type":"string","optional":false,"field":"db"},{"type":"string","optional":true,"field":"sequence"},{"type":"int64","optional":true,"field":"ts_us"},{"type":"int64","optional":true,"field":"ts_ns"},{"type":"string","optional":false,"field":"schema"},{"type":"string","optional":false,"field":"table"},{"type":"int64","optional":true,"field":"txId"},{"type":"int64","optional":true,"field":"lsn"},{"type":"int64","optional":true,"field":"xmin"}],"optional":false,"name":"io.debezium.connector.postgresql.Source","version":1,"field":"source"},{"type":"struct","fields":[{"type":"string","optional":false,"field":"id"},{"type":"int64","optional":false,"field":"total_order"},{"type":"int64","optional":false,"field":"data_collection_order"}],"optional":true,"name":"event.block","version":1,"field":"transaction"},{"type":"string","optional":false,"field":"op"},{"type":"int64","optional":true,"field":"ts_ms"},{"type":"int64","optional":true,"field":"ts_us"},{"type":"int64","optional":true,"field":"ts_ns"}],"optional":false,"name":"dbserver1.inventory.customers.Envelope","version":2},"payload":{"before":{"id":1006,"first_name":"Liam","last_name":"Han","email":"liam2@example.com"},"after":{"id":1006,"first_name":"Liam","last_name":"Han","email":"liam3@example.com"},"source":{"version":"3.1.3.Final","connector":"postgresql","name":"dbserver1","ts_ms":1766925059528,"snapshot":"false","db":"postgres","sequence":"[\"34389280\",\"34389336\"]","ts_us":1766925059528750,"ts_ns":1766925059528750000,"schema":"inventory","table":"customers","txId":779,"lsn":34389336,"xmin":null},"transaction":null,"op":"u","ts_ms":1766925059873,"ts_us":1766925059873428,"ts_ns":1766925059873428925}}`

func customersTable() Table {
	text := Type{OID: oidText, TypMod: -1}
	return Table{Schema: "inventory", Name: "customers", Key: []string{"id"}, Columns: []Column{
		{Name: "id", Type: Type{OID: oidInt4, TypMod: -1}, Serial: true},
		{Name: "first_name", Type: text},
		{Name: "last_name", Type: text},
		{Name: "email", Type: text},
	}}
}

func row(kv ...string) pipeline.Row {
	var r pipeline.Row
	for i := 0; i < len(kv); i += 2 {
		r = append(r, pipeline.Column{Name: kv[i], Value: []byte(kv[i+1])})
	}
	return r
}

func TestRecordMatchesDebezium313(t *testing.T) {
	enc := NewEncoder(DefaultConfig())
	enc.SetTable("dbserver1", customersTable())
	ev := &pipeline.Event{
		Before: row("id", "1006", "first_name", `"Liam"`, "last_name", `"Han"`, "email", `"liam2@example.com"`),
		After:  row("id", "1006", "first_name", `"Liam"`, "last_name", `"Han"`, "email", `"liam3@example.com"`),
		Source: pipeline.Source{Name: "dbserver1", DB: "postgres", Schema: "inventory", Table: "customers",
			TxID: 779, LSN: 34389336, LastCommitLSN: 34389280, TsMs: 1766925059528, TsUs: 1766925059528750, Snapshot: "false"},
		Op: pipeline.OpUpdate, TsMs: 1766925059873, TsNs: 1766925059873428925,
	}
	got, err := enc.Value(ev)
	if err != nil {
		t.Fatal(err)
	}
	want := debezium313Update
	if string(got) != want {
		t.Errorf("value differs from Debezium 3.1.3's\n got: %s\nwant: %s", got, want)
	}
	key, err := enc.Key("inventory", "customers", row("id", "1006"))
	if err != nil {
		t.Fatal(err)
	}
	wantKey := `{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"default":0,"field":"id"}],"optional":false,"name":"dbserver1.inventory.customers.Key"},"payload":{"id":1006}}`
	if string(key) != wantKey {
		t.Errorf("key\n got: %s\nwant: %s", key, wantKey)
	}

	// Without schemas the record is the payload alone (schemas.enable=false).
	cfg := DefaultConfig()
	cfg.SchemasEnable = false
	bare := NewEncoder(cfg)
	bare.SetTable("dbserver1", customersTable())
	got, err = bare.Value(ev)
	if err != nil {
		t.Fatal(err)
	}
	_, payload, _ := strings.Cut(want, `,"payload":`)
	if string(got) != strings.TrimSuffix(payload, "}") {
		t.Errorf("schemaless value\n got: %s\nwant: %s", got, strings.TrimSuffix(payload, "}"))
	}
}

func TestUnchangedToastPlaceholder(t *testing.T) {
	enc := NewEncoder(DefaultConfig())
	tbl := Table{Schema: "public", Name: "docs", Key: []string{"id"}, Columns: []Column{
		{Name: "id", Type: Type{OID: oidInt4}},
		{Name: "body", Type: Type{OID: oidText, TypMod: -1}, Optional: true},
		{Name: "blob", Type: Type{OID: oidBytea, TypMod: -1}, Optional: true},
		{Name: "tags", Type: Type{OID: 1009, Elem: &Type{OID: oidText, TypMod: -1}}, Optional: true},
		{Name: "nums", Type: Type{OID: 1007, Elem: &Type{OID: oidInt4, TypMod: -1}}, Optional: true},
		{Name: "hs", Type: Type{OID: 90001, Name: "hstore"}, Optional: true},
	}}
	enc.SetTable("cdc", tbl)
	ev := &pipeline.Event{After: row("id", "1"), Unchanged: []string{"body", "blob", "tags", "nums", "hs"},
		Source: pipeline.Source{Schema: "public", Table: "docs"}, Op: pipeline.OpUpdate}
	got, err := enc.Value(ev)
	if err != nil {
		t.Fatal(err)
	}
	// UnchangedToastedPlaceholder: the string, its bytes, a one-element
	// text list, the bytes as an int list, and for hstore a map from the
	// placeholder to itself (as JSON text in json mode).
	want := `"after":{"id":1,"body":"__debezium_unavailable_value","blob":"X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==","tags":["__debezium_unavailable_value"],"nums":[95,95,100,101,98,101,122,105,117,109,95,117,110,97,118,97,105,108,97,98,108,101,95,118,97,108,117,101],"hs":"{\"__debezium_unavailable_value\":\"__debezium_unavailable_value\"}"}`
	if !strings.Contains(string(got), want) {
		t.Errorf("got %s\nwant it to contain %s", got, want)
	}
}

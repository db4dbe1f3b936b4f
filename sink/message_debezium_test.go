package sink

import (
	"encoding/json"
	"testing"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/pipeline"
	"github.com/cdcsync/cdcsync/pipeline/debezium"
)

// TestDecodeMessageReadsDebeziumRecords: a sink pointed at topics capture
// wrote with CDCSYNC_ENCODING=debezium (with and without schemas) gets the
// same Message as from cdcsync's encoding: the key, the position (from the
// header, since Debezium's source has no commit LSN), cdcsync's value
// renderings, and the unchanged TOASTed columns.
func TestDecodeMessageReadsDebeziumRecords(t *testing.T) {
	tbl := debezium.Table{Schema: "public", Name: "orders", Key: []string{"id"}, Columns: []debezium.Column{
		{Name: "id", Type: debezium.Type{OID: 20, TypMod: -1}},
		{Name: "quantity", Type: debezium.Type{OID: 23, TypMod: -1}},
		{Name: "price", Type: debezium.Type{OID: 1700, TypMod: 10<<16 | 2 + 4}, Optional: true},
		{Name: "updated_at", Type: debezium.Type{OID: 1184, TypMod: -1}},
		{Name: "note", Type: debezium.Type{OID: 25, TypMod: -1}, Optional: true},
	}}
	row := func(kv ...string) pipeline.Row {
		var r pipeline.Row
		for i := 0; i < len(kv); i += 2 {
			r = append(r, pipeline.Column{Name: kv[i], Value: json.RawMessage(kv[i+1])})
		}
		return r
	}
	ev := &pipeline.Event{
		After:     row("id", "42", "quantity", "3", "price", `"12.50"`, "updated_at", `"2026-11-25T10:00:00.12Z"`),
		Unchanged: []string{"note"},
		Op:        pipeline.OpUpdate, TsMs: 1,
		Source: pipeline.Source{Name: "cdc", DB: "shop", Schema: "public", Table: "orders", TxID: 7, LSN: 0x16B3700, TsMs: 1, Snapshot: "false"},
	}
	pos := pipeline.Position{Commit: 0x16B3748, Change: 0x16B3700}
	for _, schemas := range []bool{true, false} {
		cfg := debezium.DefaultConfig()
		cfg.SchemasEnable = schemas
		enc := debezium.NewEncoder(cfg)
		enc.SetTable("cdc", tbl)
		key, err := enc.Key("public", "orders", row("id", "42"))
		if err != nil {
			t.Fatal(err)
		}
		value, err := enc.Value(ev)
		if err != nil {
			t.Fatal(err)
		}
		raw := &sarama.ConsumerMessage{Key: key, Value: value, Headers: []*sarama.RecordHeader{
			{Key: []byte(pipeline.HeaderPosition), Value: []byte(pos.String())},
			{Key: []byte(debezium.HeaderUnchanged), Value: []byte(`["note"]`)},
		}}
		m := decodeMessage(raw)
		if m == nil || m.Err != nil {
			t.Fatalf("schemas %v: decode: %+v", schemas, m)
		}
		if got := m.Key.AppendJSON(nil); string(got) != `{"id":42}` {
			t.Errorf("schemas %v: key %s", schemas, got)
		}
		if m.Event.Position() != pos {
			t.Errorf("schemas %v: position %v, want %v", schemas, m.Event.Position(), pos)
		}
		wantAfter := `{"id":42,"quantity":3,"price":"12.50","updated_at":"2026-11-25T10:00:00.12Z"}`
		if !schemas {
			// Without schemas the values stay in Debezium's form.
			wantAfter = `{"id":42,"quantity":3,"price":"BOI=","updated_at":"2026-11-25T10:00:00.120000Z"}`
		}
		if got := m.Event.After.AppendJSON(nil); string(got) != wantAfter {
			t.Errorf("schemas %v: after %s, want %s", schemas, got, wantAfter)
		}
		if len(m.Event.Unchanged) != 1 || m.Event.Unchanged[0] != "note" {
			t.Errorf("schemas %v: unchanged %q", schemas, m.Event.Unchanged)
		}
		// A tombstone is still a tombstone.
		if decodeMessage(&sarama.ConsumerMessage{Key: key}) != nil {
			t.Errorf("schemas %v: tombstone decoded to a message", schemas)
		}
	}
}

package pipeline

import (
	"encoding/json"
	"testing"
)

func TestRowUnmarshalKeepsOrderAndValues(t *testing.T) {
	in := `{ "b" : 1, "a":"x,}\"y", "c":{"n":[1,{"m":"]"}]}, "d":null, "e\u00e9":-1.5e3 ,"f":[] }`
	var r Row
	if err := json.Unmarshal([]byte(in), &r); err != nil {
		t.Fatal(err)
	}
	want := []struct{ name, value string }{
		{"b", `1`}, {"a", `"x,}\"y"`}, {"c", `{"n":[1,{"m":"]"}]}`}, {"d", `null`}, {"eé", `-1.5e3`}, {"f", `[]`},
	}
	if len(r) != len(want) {
		t.Fatalf("got %d columns: %+v", len(r), r)
	}
	for i, w := range want {
		if r[i].Name != w.name || string(r[i].Value) != w.value {
			t.Errorf("column %d = %q %s, want %q %s", i, r[i].Name, r[i].Value, w.name, w.value)
		}
	}
	// Round trip through the encoder.
	var again Row
	if err := json.Unmarshal(r.AppendJSON(nil), &again); err != nil || len(again) != len(r) {
		t.Fatalf("round trip: %v %+v", err, again)
	}
	for _, bad := range []string{`[1]`, `"s"`, `{"a"}`, `{"a":1,}`, `{"a":1 "b":2}`} {
		var r Row
		if err := json.Unmarshal([]byte(bad), &r); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func BenchmarkDecodeEvent(b *testing.B) {
	ev := Event{
		After:  Row{{"id", json.RawMessage(`42`)}, {"item_id", json.RawMessage(`7`)}, {"quantity", json.RawMessage(`3`)}, {"status", json.RawMessage(`"paid"`)}, {"created_at", json.RawMessage(`"2026-11-25T10:00:00.123456Z"`)}},
		Source: Source{Connector: "postgresql", Name: "cdc", DB: "orders", Schema: "public", Table: "orders", TxID: 9, LSN: 100, CommitLSN: 200, TsMs: 1, Snapshot: "false"},
		Op:     OpUpdate, TsMs: 2,
	}
	data := ev.AppendJSON(nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeEvent(data); err != nil {
			b.Fatal(err)
		}
	}
}

// The source block carries Debezium's fields in the cdcsync encoding too;
// sequence is a JSON string holding ["<last commit LSN>","<LSN>"].
func TestSourceHasDebeziumFields(t *testing.T) {
	for _, tc := range []struct {
		last uint64
		want string
	}{{0, `[null,"7"]`}, {5, `["5","7"]`}} {
		ev := Event{Op: OpCreate, After: Row{{Name: "id", Value: []byte("1")}},
			Source: Source{Table: "t", LSN: 7, CommitLSN: 9, TsMs: 3, TsUs: 3004, LastCommitLSN: tc.last}}
		var got struct {
			Source struct {
				Version  string `json:"version"`
				TsUs     int64  `json:"ts_us"`
				TsNs     int64  `json:"ts_ns"`
				Sequence string `json:"sequence"`
				Xmin     *int64 `json:"xmin"`
			} `json:"source"`
		}
		if err := json.Unmarshal(ev.AppendJSON(nil), &got); err != nil {
			t.Fatal(err)
		}
		s := got.Source
		if s.Version != DebeziumVersion || s.TsUs != 3004 || s.TsNs != 3004000 || s.Sequence != tc.want || s.Xmin != nil {
			t.Errorf("last commit %d: source %+v, want sequence %s", tc.last, s, tc.want)
		}
	}
}

package sink

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

func testOrders(t *testing.T) orderSchema {
	t.Helper()
	o, err := newOrderSchema(config.Inventory{
		OrdersTable: "public.orders", OrderIDColumn: "id", ItemColumn: "item_id", QuantityColumn: "quantity",
		StatusColumn: "status", ReservedStatuses: []string{"created", "paid"}, ShippedStatuses: []string{"shipped"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func row(kv ...string) pipeline.Row {
	var r pipeline.Row
	for i := 0; i < len(kv); i += 2 {
		r = append(r, pipeline.Column{Name: kv[i], Value: json.RawMessage(kv[i+1])})
	}
	return r
}

func TestParseInteger(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		null bool
		bad  bool
	}{
		{in: `7`, want: 7}, {in: `-3`, want: -3}, {in: `"42"`, want: 42}, {in: `" 5 "`, want: 5},
		{in: `"3.00"`, want: 3}, {in: `3.0`, want: 3}, {in: `null`, null: true},
		{in: `"3.5"`, bad: true}, {in: `"abc"`, bad: true}, {in: `true`, bad: true}, {in: `{"a":1}`, bad: true},
		{in: `"99999999999999999999"`, bad: true}, {in: `""`, bad: true},
	} {
		n, null, err := parseInteger(json.RawMessage(c.in))
		if (err != nil) != c.bad || null != c.null || (!c.bad && n != c.want) {
			t.Errorf("parseInteger(%s) = %d, %v, %v; want %d, null %v, bad %v", c.in, n, null, err, c.want, c.null, c.bad)
		}
	}
}

func TestOrderChanges(t *testing.T) {
	o := testOrders(t)
	pos := pipeline.Position{Commit: 200, Change: 150}
	ev := &pipeline.Event{Op: pipeline.OpUpdate, After: row("id", `7`, "item_id", `"12"`, "quantity", `"3.00"`, "status", `"paid"`),
		Source: pipeline.Source{Schema: "public", Table: "orders"}}
	ev.SetPosition(pos)
	chs, err := o.changes(&Message{Event: ev, Key: row("id", `7`)})
	if err != nil || len(chs) != 1 {
		t.Fatalf("changes: %v %v", chs, err)
	}
	c := chs[0]
	if c.id != "7" || *c.item != 12 || *c.quantity != 3 || *c.status != "paid" || c.pos != pos || c.deleted {
		t.Fatalf("change = %+v", c)
	}

	// An unchanged TOASTed status keeps the stored one.
	ev.After = row("id", `7`, "item_id", `12`, "quantity", `4`)
	ev.Unchanged = []string{"status"}
	chs, err = o.changes(&Message{Event: ev, Key: row("id", `7`)})
	if err != nil {
		t.Fatal(err)
	}
	paid := "paid"
	prev := &orderState{Item: ptr(int64(12)), Quantity: ptr(int64(3)), Status: &paid, Pos: pipeline.Position{Commit: 100, Change: 90}}
	next := chs[0].apply(prev)
	if *next.Status != "paid" || *next.Quantity != 4 || next.Pos != pos {
		t.Fatalf("apply with unchanged status = %+v", next)
	}

	// A primary-key change deletes the old id at the same position.
	ev.Unchanged = nil
	ev.After = row("id", `8`, "item_id", `12`, "quantity", `4`, "status", `"paid"`)
	ev.Before = row("id", `7`)
	chs, err = o.changes(&Message{Event: ev, Key: row("id", `8`)})
	if err != nil || len(chs) != 2 || chs[0].id != "7" || !chs[0].deleted || chs[1].id != "8" {
		t.Fatalf("pk change: %+v %v", chs, err)
	}

	// A delete carries only the key in before.
	del := &pipeline.Event{Op: pipeline.OpDelete, Before: row("id", `"A-1"`), Source: pipeline.Source{Schema: "public", Table: "orders"}}
	chs, err = o.changes(&Message{Event: del, Key: row("id", `"A-1"`)})
	if err != nil || len(chs) != 1 || chs[0].id != "A-1" || !chs[0].deleted {
		t.Fatalf("delete: %+v %v", chs, err)
	}
	if st := chs[0].apply(prev); !st.Deleted || *st.Item != 12 {
		t.Fatalf("tombstone = %+v", st)
	}
}

func TestOrderChangesRejectsBadRows(t *testing.T) {
	o := testOrders(t)
	for name, ev := range map[string]*pipeline.Event{
		"quantity not a number": {Op: pipeline.OpCreate, After: row("id", `1`, "item_id", `2`, "quantity", `"lots"`, "status", `"paid"`)},
		"item missing":          {Op: pipeline.OpCreate, After: row("id", `1`, "quantity", `2`, "status", `"paid"`)},
		"null id":               {Op: pipeline.OpCreate, After: row("id", `null`, "item_id", `2`, "quantity", `2`, "status", `"paid"`)},
		"status is an object":   {Op: pipeline.OpCreate, After: row("id", `1`, "item_id", `2`, "quantity", `2`, "status", `{"a":1}`)},
	} {
		ev.Source = pipeline.Source{Schema: "public", Table: "orders"}
		_, err := o.changes(&Message{Event: ev, Key: row("id", `1`)})
		if !errors.Is(err, errPermanent) {
			t.Errorf("%s: err = %v, want a permanent error", name, err)
		}
	}
	other := &pipeline.Event{Op: pipeline.OpCreate, After: row("id", `1`), Source: pipeline.Source{Schema: "public", Table: "items"}}
	if _, err := o.changes(&Message{Event: other}); !errors.Is(err, errPermanent) {
		t.Errorf("event of another table: err = %v", err)
	}
}

func TestContribution(t *testing.T) {
	o := testOrders(t)
	st := func(s string) *string { return &s }
	for _, c := range []struct {
		state              *orderState
		item, res, shipped int64
		ok                 bool
	}{
		{state: nil},
		{state: &orderState{Item: ptr(int64(1)), Quantity: ptr(int64(5)), Status: st("created")}, item: 1, res: 5, ok: true},
		{state: &orderState{Item: ptr(int64(1)), Quantity: ptr(int64(5)), Status: st("paid")}, item: 1, res: 5, ok: true},
		{state: &orderState{Item: ptr(int64(2)), Quantity: ptr(int64(5)), Status: st("shipped")}, item: 2, shipped: 5, ok: true},
		{state: &orderState{Item: ptr(int64(2)), Quantity: ptr(int64(5)), Status: st("cancelled")}, item: 2, ok: true},
		{state: &orderState{Item: ptr(int64(2)), Quantity: ptr(int64(5)), Status: st("paid"), Deleted: true}},
		{state: &orderState{Item: nil, Quantity: ptr(int64(5)), Status: st("paid")}},
		{state: &orderState{Item: ptr(int64(2)), Quantity: nil, Status: st("paid")}},
	} {
		item, r, s, ok := o.contribution(c.state)
		if item != c.item || r != c.res || s != c.shipped || ok != c.ok {
			t.Errorf("contribution(%+v) = %d %d %d %v", c.state, item, r, s, ok)
		}
	}
}

func TestPositionKeyOrdersLikePositions(t *testing.T) {
	ps := []pipeline.Position{
		{Commit: 0, Change: 0}, {Commit: 1, Change: 0}, {Commit: 1, Change: 0xFFFFFFFF}, {Commit: 0x10, Change: 2},
		{Commit: 0x1_0000_0000, Change: 1}, {Commit: 0xFFFF_FFFF_FFFF_FFFF, Change: 0},
	}
	for i := range ps {
		for j := range ps {
			a, b := positionKey(ps[i]), positionKey(ps[j])
			if len(a) != 32 {
				t.Fatalf("positionKey(%v) = %q", ps[i], a)
			}
			if (a < b) != ps[i].Less(ps[j]) {
				t.Errorf("positionKey order of %v, %v differs from Less", ps[i], ps[j])
			}
		}
	}
}

func TestDecodeMessage(t *testing.T) {
	ev := &pipeline.Event{Op: pipeline.OpCreate, After: row("id", `1`), Source: pipeline.Source{Schema: "public", Table: "orders", CommitLSN: 0x100, LSN: 0xF0}}
	value := ev.AppendJSON(nil)
	raw := func(key, value string) *Message {
		return decodeMessage(newRawMessage([]byte(key), []byte(value)))
	}
	if m := decodeMessage(newRawMessage([]byte(`{"id":1}`), nil)); m != nil {
		t.Fatalf("tombstone decoded as %+v", m)
	}
	if m := raw(`{"id":1}`, string(value)); m.Err != nil || pipeline.KeyString(m.Key) != "1" {
		t.Fatalf("good message: %+v", m)
	}
	for name, m := range map[string]*Message{
		"not json":         raw(`{"id":1}`, "garbage"),
		"unknown op":       raw(`{"id":1}`, `{"op":"x","source":{"table":"orders"}}`),
		"no key":           raw(``, string(value)),
		"key not json":     raw(`id=1`, string(value)),
		"key is null":      raw(`null`, string(value)),
		"create, no after": raw(`{"id":1}`, `{"before":null,"after":null,"op":"c","source":{"table":"orders"}}`),
	} {
		if !errors.Is(m.Err, errPermanent) {
			t.Errorf("%s: Err = %v", name, m.Err)
		}
	}
	tr := &pipeline.Event{Op: pipeline.OpTruncate, Source: pipeline.Source{Schema: "public", Table: "orders", CommitLSN: 0x200, LSN: 0x1F0}}
	if m := decodeMessage(newRawMessage(nil, tr.AppendJSON(nil))); m.Err != nil || m.Key != nil {
		t.Fatalf("truncate: %+v", m)
	}
}

func TestEscapeGlob(t *testing.T) {
	if got := escapeGlob(`cdcver:a*b?.c[d]\:`); got != `cdcver:a\*b\?.c\[d\]\\:` {
		t.Fatalf("escapeGlob = %q", got)
	}
}

func newRawMessage(key, value []byte) *sarama.ConsumerMessage {
	return &sarama.ConsumerMessage{Topic: "cdc.public.orders", Key: key, Value: value}
}

func ptr[T any](v T) *T { return &v }

package capture

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/outbox"
	"github.com/cdcsync/cdcsync/pipeline"
)

func newTestOutboxRouter(t *testing.T) *OutboxRouter {
	t.Helper()
	r, err := NewOutboxRouter(config.Capture{TopicPrefix: "cdc", OutboxPrefix: outbox.DefaultPrefix, OutboxTable: "public.outbox"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func headerMapOf(hs []sarama.RecordHeader) map[string]string {
	m := map[string]string{}
	for _, h := range hs {
		m[string(h.Key)] = string(h.Value)
	}
	return m
}

func TestNewOutboxRouter(t *testing.T) {
	r := newTestOutboxRouter(t)
	if got := r.Topic("order"); got != "cdc.events.order" {
		t.Errorf("Topic(order) = %q, want cdc.events.order", got)
	}
	if got := r.DeadLetterTopic(); got != "cdc.events.dlq" {
		t.Errorf("DeadLetterTopic() = %q", got)
	}
	if s, tb, ok := r.Table(); !ok || s != "public" || tb != "outbox" {
		t.Errorf("Table() = %q, %q, %v", s, tb, ok)
	}

	r, err := NewOutboxRouter(config.Capture{TopicPrefix: "cdc", OutboxTopicPrefix: "events", OutboxTable: "outbox"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Topic("order") != "events.order" || !r.IsOutboxTable("public", "outbox") {
		t.Errorf("topic %q, bare table name not read as public.outbox", r.Topic("order"))
	}
	// An empty prefix turns message mode off.
	if _, ok, _ := r.Message(&pglogrepl.LogicalDecodingMessage{Transactional: true, Content: []byte("{}")}, pipeline.Position{}); ok {
		t.Error("empty prefix: message routed")
	}

	for _, cfg := range []config.Capture{
		{TopicPrefix: "cdc", OutboxPrefix: heartbeatPrefix},
		{TopicPrefix: "cdc", OutboxTable: "a.b.c"},
		{TopicPrefix: "cdc", OutboxTable: ".outbox"},
	} {
		if _, err := NewOutboxRouter(cfg); err == nil {
			t.Errorf("NewOutboxRouter(%+v) succeeded", cfg)
		}
	}
}

func TestOutboxMessage(t *testing.T) {
	r := newTestOutboxRouter(t)
	pos := pipeline.Position{Commit: 0x2000, Change: 0x1F00}
	ev := outbox.Event{
		ID: outbox.NewID(), Aggregate: "order", AggregateID: "42", Type: "OrderCreated",
		Payload: []byte(`{ "item_id": 7, "quantity": 2 }`),
		Headers: map[string]string{"trace": "t-1"},
	}
	m := &pglogrepl.LogicalDecodingMessage{Transactional: true, Prefix: outbox.DefaultPrefix, Content: outbox.EncodeMessage(ev)}
	rec, ok, err := r.Message(m, pos)
	if err != nil || !ok {
		t.Fatalf("Message = ok %v, %v", ok, err)
	}
	if rec.Topic != "cdc.events.order" || string(rec.Key) != "42" || !bytes.Equal(rec.Value, ev.Payload) || rec.Position != pos {
		t.Fatalf("record = %+v", rec)
	}
	want := map[string]string{
		"id": ev.ID, "type": "OrderCreated", "aggregatetype": "order", "content-type": "application/json",
		pipeline.HeaderPosition: pos.String(), "trace": "t-1",
	}
	if got := headerMapOf(rec.Headers); !mapsEqual(got, want) {
		t.Fatalf("headers = %v, want %v", got, want)
	}
	// The record must not share memory with the stream's buffer.
	for i := range m.Content {
		m.Content[i] = 'x'
	}
	if !bytes.Equal(rec.Value, ev.Payload) || string(rec.Key) != "42" {
		t.Fatal("record aliases the message content")
	}

	// Other prefixes are not the router's.
	for _, prefix := range []string{heartbeatPrefix, "other.tool", ""} {
		m := &pglogrepl.LogicalDecodingMessage{Transactional: true, Prefix: prefix, Content: outbox.EncodeMessage(ev)}
		if _, ok, err := r.Message(m, pos); ok || err != nil {
			t.Errorf("prefix %q: ok %v, err %v", prefix, ok, err)
		}
	}

	// An opaque payload comes back as the bytes given.
	raw := ev
	raw.ContentType = "application/octet-stream"
	raw.Payload = []byte{0, 0xff, '\n'}
	m = &pglogrepl.LogicalDecodingMessage{Transactional: true, Prefix: outbox.DefaultPrefix, Content: outbox.EncodeMessage(raw)}
	if rec, _, err = r.Message(m, pos); err != nil || !bytes.Equal(rec.Value, raw.Payload) ||
		headerMapOf(rec.Headers)["content-type"] != "application/octet-stream" {
		t.Fatalf("opaque payload: %+v, %v", rec, err)
	}
}

func TestOutboxMessageDeadLetters(t *testing.T) {
	r := newTestOutboxRouter(t)
	pos := pipeline.Position{Commit: 0x3000, Change: 0x2F00}
	good := outbox.Event{ID: outbox.NewID(), Aggregate: "order", AggregateID: "42", Type: "OrderCreated", Payload: []byte(`{}`)}
	noAggID := good
	noAggID.AggregateID = ""
	tests := []struct {
		name          string
		transactional bool
		content       []byte
		want          error
		key           string
	}{
		{"not transactional", false, outbox.EncodeMessage(good), errNonTransactional, ""},
		{"not json", true, []byte("{broken"), outbox.ErrInvalidEnvelope, ""},
		{"missing aggregate id", true, outbox.EncodeMessage(noAggID), outbox.ErrMissingAggregateID, ""},
		{"bad aggregate", true, []byte(`{"id":"` + good.ID + `","aggregatetype":"a b","aggregateid":"7","type":"T","payload":1}`), outbox.ErrInvalidAggregate, "7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &pglogrepl.LogicalDecodingMessage{Transactional: tt.transactional, Prefix: outbox.DefaultPrefix, Content: tt.content}
			_, ok, err := r.Message(m, pos)
			var inv *InvalidOutboxEventError
			if !ok || !errors.As(err, &inv) || !errors.Is(err, tt.want) {
				t.Fatalf("Message = ok %v, %v; want an InvalidOutboxEventError wrapping %v", ok, err, tt.want)
			}
			dl := inv.DeadLetter
			h := headerMapOf(dl.Headers)
			if dl.Topic != "cdc.events.dlq" || !bytes.Equal(dl.Value, tt.content) || dl.Position != pos ||
				h[pipeline.HeaderDLQError] == "" || h[pipeline.HeaderPosition] != pos.String() ||
				h[HeaderOutboxSource] != "message "+outbox.DefaultPrefix || string(dl.Key) != tt.key {
				t.Fatalf("dead letter = %+v (headers %v)", dl, h)
			}
		})
	}
}

// outboxRow builds the After row the decoder makes of an outbox-table row:
// text and uuid as JSON strings, jsonb as a JSON string of the JSON text.
func outboxRow(id, aggType, aggID, typ, payload, headers string) pipeline.Row {
	str := func(s string) json.RawMessage { b, _ := json.Marshal(s); return b }
	row := pipeline.Row{
		{Name: "id", Value: str(id)},
		{Name: "aggregatetype", Value: str(aggType)},
		{Name: "aggregateid", Value: str(aggID)},
		{Name: "type", Value: str(typ)},
		{Name: "payload", Value: json.RawMessage("null")},
		{Name: "headers", Value: json.RawMessage("null")},
		{Name: "created_at", Value: str("2025-01-01T00:00:00Z")},
	}
	if payload != "" {
		row[4].Value = str(payload)
	}
	if headers != "" {
		row[5].Value = str(headers)
	}
	return row
}

func outboxChange(op pipeline.Op, pos pipeline.Position, after pipeline.Row) Change {
	ev := &pipeline.Event{Op: op, After: after, Source: pipeline.Source{Schema: "public", Table: "outbox"}}
	if op == pipeline.OpDelete {
		ev.Before, ev.After = after, nil
	}
	return Change{Schema: "public", Table: "outbox", Key: after[:1], Event: ev, Position: pos}
}

func TestOutboxChange(t *testing.T) {
	r := newTestOutboxRouter(t)
	pos := pipeline.Position{Commit: 0x5000, Change: 0x4000}
	id := outbox.NewID()
	row := outboxRow(id, "order", "42", "OrderCreated", `{"item_id": 7, "quantity": 2}`, `{"trace": "t-1", "n": 3}`)

	rec, ok, err := r.Change(outboxChange(pipeline.OpCreate, pos, row))
	if err != nil || !ok {
		t.Fatalf("Change(insert) = ok %v, %v", ok, err)
	}
	if rec.Topic != "cdc.events.order" || string(rec.Key) != "42" || string(rec.Value) != `{"item_id": 7, "quantity": 2}` || rec.Position != pos {
		t.Fatalf("record = %+v (value %s)", rec, rec.Value)
	}
	want := map[string]string{
		"id": id, "type": "OrderCreated", "aggregatetype": "order", "content-type": "application/json",
		pipeline.HeaderPosition: pos.String(), "trace": "t-1", "n": "3",
	}
	if got := headerMapOf(rec.Headers); !mapsEqual(got, want) {
		t.Fatalf("headers = %v, want %v", got, want)
	}

	// A numeric aggregate id column and a non-uuid id (Debezium tables).
	numeric := outboxRow("evt-1", "order", "", "OrderCreated", `{}`, "")
	numeric[2].Value = json.RawMessage("42")
	if rec, _, err := r.Change(outboxChange(pipeline.OpCreate, pos, numeric)); err != nil || string(rec.Key) != "42" {
		t.Fatalf("numeric aggregate id: %+v, %v", rec, err)
	}

	// Other tables are not the router's.
	other := outboxChange(pipeline.OpCreate, pos, row)
	other.Table = "orders"
	if _, ok, err := r.Change(other); ok || err != nil {
		t.Fatalf("Change(orders) = ok %v, %v", ok, err)
	}
}

func TestOutboxChangeDrops(t *testing.T) {
	row := outboxRow(outbox.NewID(), "order", "42", "OrderCreated", `{}`, "")
	at := func(n uint64) pipeline.Position { return pipeline.Position{Commit: 0x9000, Change: pglogrepl.LSN(n)} }
	tombstone := Change{Schema: "public", Table: "outbox", Key: row[:1], Position: at(2)}
	for _, c := range []Change{
		outboxChange(pipeline.OpDelete, at(1), row),
		tombstone,
		outboxChange(pipeline.OpUpdate, at(3), row),
		outboxChange(pipeline.OpRead, at(4), row),
		{Schema: "public", Table: "outbox", Event: &pipeline.Event{Op: pipeline.OpTruncate}, Position: at(5)},
	} {
		op := "tombstone"
		if c.Event != nil {
			op = string(c.Event.Op)
		}
		rec, ok, err := newTestOutboxRouter(t).Change(c)
		if !ok || err != nil || rec.Topic != "" {
			t.Errorf("op %s: got %+v, ok %v, err %v; want dropped", op, rec, ok, err)
		}
	}

	// An update that changes the id reaches the router as delete,
	// tombstone and create at one position: none of it is an event.
	r := newTestOutboxRouter(t)
	for _, c := range []Change{outboxChange(pipeline.OpDelete, at(6), row), {Schema: "public", Table: "outbox", Key: row[:1], Position: at(6)}, outboxChange(pipeline.OpCreate, at(6), row)} {
		if rec, ok, err := r.Change(c); !ok || err != nil || rec.Topic != "" {
			t.Fatalf("key-changing update: got %+v, %v; want dropped", rec, err)
		}
	}
	// A real insert after a delete has its own position and is an event.
	if rec, ok, err := r.Change(outboxChange(pipeline.OpCreate, at(7), row)); !ok || err != nil || rec.Topic == "" {
		t.Fatalf("insert after delete: got %+v, %v; want an event", rec, err)
	}
}

func TestOutboxChangeDeadLetters(t *testing.T) {
	r := newTestOutboxRouter(t)
	pos := pipeline.Position{Commit: 0x7000, Change: 0x6000}
	id := outbox.NewID()
	tests := []struct {
		name string
		row  pipeline.Row
		want error
	}{
		{"null payload", outboxRow(id, "order", "42", "T", "", ""), outbox.ErrInvalidPayload},
		{"payload not json (bytea)", outboxRow(id, "order", "42", "T", "AAEC", ""), outbox.ErrInvalidPayload},
		{"missing aggregate id", outboxRow(id, "order", "", "T", `{}`, ""), outbox.ErrMissingAggregateID},
		{"missing type", outboxRow(id, "order", "42", "", `{}`, ""), outbox.ErrMissingType},
		{"bad aggregate", outboxRow(id, "sales order", "42", "T", `{}`, ""), outbox.ErrInvalidAggregate},
		{"headers not an object", outboxRow(id, "order", "42", "T", `{}`, `[1]`), outbox.ErrInvalidHeader},
		{"reserved header", outboxRow(id, "order", "42", "T", `{}`, `{"id":"x"}`), outbox.ErrInvalidHeader},
		{"missing id", outboxRow("", "order", "42", "T", `{}`, ""), outbox.ErrMissingID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := outboxChange(pipeline.OpCreate, pos, tt.row)
			_, ok, err := r.Change(c)
			var inv *InvalidOutboxEventError
			if !ok || !errors.As(err, &inv) || !errors.Is(err, tt.want) || !errors.Is(err, outbox.ErrInvalidEvent) {
				t.Fatalf("Change = ok %v, %v; want an InvalidOutboxEventError wrapping %v", ok, err, tt.want)
			}
			dl := inv.DeadLetter
			h := headerMapOf(dl.Headers)
			if dl.Topic != "cdc.events.dlq" || dl.Position != pos || h[HeaderOutboxSource] != "table public.outbox" ||
				!strings.Contains(h[pipeline.HeaderDLQError], tt.want.Error()) {
				t.Fatalf("dead letter = %+v (headers %v)", dl, h)
			}
			if _, err := pipeline.DecodeEvent(dl.Value); err != nil {
				t.Fatalf("dead-letter value is not the change envelope: %v: %s", err, dl.Value)
			}
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestOutboxThroughDecoder publishes in committed and rolled-back
// transactions, in both modes, and feeds what a real pgoutput slot decodes
// through the Decoder and the router, as the stream does: the records are
// the committed events, in commit order, with the payload as given (as
// jsonb prints it in table mode).
func TestOutboxThroughDecoder(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	for _, tableMode := range []bool{false, true} {
		name := "message"
		if tableMode {
			name = "table"
		}
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			db := e.PG.CreateDB(t)
			conn := connect(t, e, db)
			cfg := config.Capture{TopicPrefix: "cdc", OutboxPrefix: outbox.DefaultPrefix}
			var opts []outbox.Option
			pubSQL := `CREATE PUBLICATION obx`
			if tableMode {
				cfg.OutboxTable = "public.outbox"
				opts = append(opts, outbox.WithTable("public", "outbox"), outbox.WithDeleteAfterInsert())
				pubSQL += ` FOR TABLE public.outbox`
			}
			router, err := NewOutboxRouter(cfg)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := outbox.New(opts...)
			if err != nil {
				t.Fatal(err)
			}
			if tableMode {
				if err := pub.CreateTable(ctx, conn); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := conn.Exec(ctx, pubSQL); err != nil {
				t.Fatal(err)
			}
			slot := testenv.RandomName("slot")
			if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
				t.Fatal(err)
			}

			mk := func(aggID, label string) outbox.Event {
				return outbox.Event{ID: outbox.NewID(), Aggregate: "order", AggregateID: aggID, Type: "OrderCreated",
					Payload: []byte(`{"label": "` + label + `"}`), Headers: map[string]string{"label": label}}
			}
			c2 := connect(t, e, db)
			committedLater, rolledBack, committedFirst := mk("1", "later"), mk("1", "rolled-back"), mk("2", "first")
			tx1, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := pub.Publish(ctx, tx1, committedLater); err != nil {
				t.Fatal(err)
			}
			tx2, err := c2.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := pub.Publish(ctx, tx2, committedFirst); err != nil {
				t.Fatal(err)
			}
			if err := tx2.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if err := tx1.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			tx3, err := c2.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := pub.Publish(ctx, tx3, rolledBack); err != nil {
				t.Fatal(err)
			}
			if err := tx3.Rollback(ctx); err != nil {
				t.Fatal(err)
			}

			recs := decodeOutboxSlot(t, conn, router, slot, "obx")
			want := []outbox.Event{committedFirst, committedLater}
			if len(recs) != len(want) {
				t.Fatalf("got %d records, want %d: %+v", len(recs), len(want), recs)
			}
			for i, w := range want {
				r := recs[i]
				h := headerMapOf(r.Headers)
				if r.Topic != "cdc.events.order" || string(r.Key) != w.AggregateID || h["id"] != w.ID || h["label"] != w.Headers["label"] ||
					string(r.Value) != string(w.Payload) || h[pipeline.HeaderPosition] != r.Position.String() {
					t.Fatalf("record %d = %+v (value %s, headers %v), want event %+v", i, r, r.Value, h, w)
				}
			}
			if !recs[0].Position.Less(recs[1].Position) {
				t.Fatalf("positions not in stream order: %s then %s", recs[0].Position, recs[1].Position)
			}
		})
	}
}

// decodeOutboxSlot reads the slot up to now through the Decoder and the
// router and returns the records the router produced.
func decodeOutboxSlot(t *testing.T, conn *pgx.Conn, router *OutboxRouter, slot, pub string) []Record {
	t.Helper()
	ctx := t.Context()
	types := NewTypes()
	if err := types.LoadTypes(ctx, conn); err != nil {
		t.Fatal(err)
	}
	dec := NewDecoder(SourceInfo{Name: "cdc", DB: conn.Config().Database}, types)
	rows, err := conn.Query(ctx, `SELECT lsn, data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL,
		'proto_version', '1', 'publication_names', $2, 'messages', 'true')`, slot, pub)
	if err != nil {
		t.Fatal(err)
	}
	type walRow struct {
		LSN  pglogrepl.LSN
		Data []byte
	}
	var wal []walRow
	for rows.Next() {
		var lsn string
		var w walRow
		if err := rows.Scan(&lsn, &w.Data); err != nil {
			t.Fatal(err)
		}
		if w.LSN, err = pglogrepl.ParseLSN(lsn); err != nil {
			t.Fatal(err)
		}
		wal = append(wal, w)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var out []Record
	var commit pglogrepl.LSN
	for _, w := range wal {
		msg, err := pglogrepl.Parse(w.Data)
		if err != nil {
			t.Fatal(err)
		}
		if b, ok := msg.(*pglogrepl.BeginMessage); ok {
			commit = b.FinalLSN
		}
		if m, ok := msg.(*pglogrepl.LogicalDecodingMessage); ok {
			rec, ok, err := router.Message(m, pipeline.Position{Commit: commit, Change: w.LSN})
			if err != nil {
				t.Fatalf("route message: %v", err)
			}
			if ok && rec.Topic != "" {
				out = append(out, rec)
			}
			continue
		}
		changes, err := dec.Decode(msg, w.LSN)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		for _, c := range changes {
			rec, ok, err := router.Change(c)
			if err != nil || !ok {
				t.Fatalf("route change of %s.%s: ok %v, %v", c.Schema, c.Table, ok, err)
			}
			if rec.Topic != "" {
				out = append(out, rec)
			}
		}
	}
	return out
}

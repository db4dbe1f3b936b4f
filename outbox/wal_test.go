package outbox_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/outbox"
)

// walEvent is an outbox event as a pgoutput slot delivers it.
type walEvent struct {
	outbox.Event
	Xid    uint32
	Commit pglogrepl.LSN
}

// walReader reads what a pgoutput slot (proto 1, messages on) decodes from
// the WAL, as capture's stream does, through the SQL interface: each read
// returns everything committed so far, which makes the tests deterministic.
type walReader struct {
	conn      *pgx.Conn
	slot, pub string
	prefix    string // outbox message prefix
	table     string // outbox table name, "" in message mode

	deletes   int // outbox table deletes seen
	relations map[uint32]*pglogrepl.RelationMessage
}

// newWALReader creates a pgoutput slot in conn's database. It must be
// created before the events are written.
func newWALReader(t *testing.T, conn *pgx.Conn, pub, prefix, table string) *walReader {
	t.Helper()
	w := &walReader{conn: conn, slot: testenv.RandomName("slot"), pub: pub, prefix: prefix, table: table,
		relations: map[uint32]*pglogrepl.RelationMessage{}}
	if _, err := conn.Exec(t.Context(), `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, w.slot); err != nil {
		t.Fatalf("create slot: %v", err)
	}
	return w
}

// read consumes the slot up to now and returns the outbox events in stream
// order.
func (w *walReader) read(t *testing.T, ctx context.Context) []walEvent {
	t.Helper()
	rows, err := w.conn.Query(ctx, `SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL,
		'proto_version', '1', 'publication_names', $2, 'messages', 'true')`, w.slot, w.pub)
	if err != nil {
		t.Fatalf("read slot: %v", err)
	}
	datas, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		t.Fatalf("read slot: %v", err)
	}
	var (
		out     []walEvent
		pending []walEvent // events of the open transaction
		xid     uint32
	)
	for _, data := range datas {
		msg, err := pglogrepl.Parse(data)
		if err != nil {
			t.Fatalf("parse pgoutput message: %v", err)
		}
		switch m := msg.(type) {
		case *pglogrepl.BeginMessage:
			xid, pending = m.Xid, nil
		case *pglogrepl.CommitMessage:
			for i := range pending {
				pending[i].Commit = m.CommitLSN
			}
			out = append(out, pending...)
			pending = nil
		case *pglogrepl.RelationMessage:
			w.relations[m.RelationID] = m
		case *pglogrepl.LogicalDecodingMessage:
			if m.Prefix != w.prefix {
				continue
			}
			if !m.Transactional {
				// It would be decoded even if its transaction rolled back.
				t.Errorf("outbox message at %s is not transactional", m.LSN)
				continue
			}
			e, err := outbox.DecodeMessage(m.Content)
			if err != nil {
				t.Fatalf("decode outbox message: %v", err)
			}
			pending = append(pending, walEvent{Event: e, Xid: xid})
		case *pglogrepl.InsertMessage:
			rel := w.relations[m.RelationID]
			if rel == nil || rel.RelationName != w.table {
				continue
			}
			pending = append(pending, walEvent{Event: rowEvent(t, rel, m.Tuple), Xid: xid})
		case *pglogrepl.DeleteMessage:
			if rel := w.relations[m.RelationID]; rel != nil && rel.RelationName == w.table {
				w.deletes++
			}
		}
	}
	return out
}

// rowEvent reads an outbox row from a text-format pgoutput tuple.
func rowEvent(t *testing.T, rel *pglogrepl.RelationMessage, tuple *pglogrepl.TupleData) outbox.Event {
	t.Helper()
	var e outbox.Event
	for i, col := range tuple.Columns {
		if col.DataType != pglogrepl.TupleDataTypeText {
			continue
		}
		v := col.Data
		switch rel.Columns[i].Name {
		case "id":
			e.ID = string(v)
		case "aggregatetype":
			e.Aggregate = string(v)
		case "aggregateid":
			e.AggregateID = string(v)
		case "type":
			e.Type = string(v)
		case "payload":
			e.Payload = append([]byte(nil), v...)
		case "headers":
			if err := json.Unmarshal(v, &e.Headers); err != nil {
				t.Fatalf("outbox row headers %s: %v", v, err)
			}
		}
	}
	return e
}

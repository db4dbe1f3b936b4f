package sink

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/cdcsync/cdcsync/pipeline"
)

// record is one Kafka message as capture would produce it.
type record struct {
	key   []byte // nil for a truncate
	value []byte // nil for a tombstone
	pos   pipeline.Position
	op    pipeline.Op
}

// modelOrder is an order of the test's model of public.orders.
type modelOrder struct {
	id       int64
	item     int64
	qty      int64
	status   string
	note     string // a "TOASTed" column: updates often leave it out as unchanged
	coupon   string // nullable: "" is NULL
	lastRow  map[string]string
	snapshot bool
}

// workload generates a random order lifecycle (create, pay, ship, cancel,
// change item or quantity, delete, re-key, truncate) as capture would emit
// it, and keeps the model the sinks must end up matching.
type workload struct {
	rnd    *rand.Rand
	items  int64
	lsn    uint64
	nextID int64
	live   map[int64]*modelOrder
	ids    []int64 // live ids, for random picks
	// touched holds every item an order ever referenced.
	touched map[int64]bool
	// truncates controls whether truncate events are generated.
	truncates bool
	txID      uint32
}

func newWorkload(seed uint64, items int64) *workload {
	return &workload{
		rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), items: items, lsn: 0x1000000,
		nextID: 1, live: map[int64]*modelOrder{}, touched: map[int64]bool{},
	}
}

func (w *workload) addLive(o *modelOrder) {
	w.live[o.id] = o
	w.ids = append(w.ids, o.id)
}

func (w *workload) removeLive(id int64) {
	delete(w.live, id)
	for i, x := range w.ids {
		if x == id {
			w.ids[i] = w.ids[len(w.ids)-1]
			w.ids = w.ids[:len(w.ids)-1]
			return
		}
	}
}

func (w *workload) pick() *modelOrder {
	if len(w.ids) == 0 {
		return nil
	}
	return w.live[w.ids[w.rnd.IntN(len(w.ids))]]
}

// snapshot emits n orders as snapshot rows (op r) sharing one position.
func (w *workload) snapshot(n int) []record {
	w.lsn += 100
	pos := pipeline.Position{Commit: pglsn(w.lsn), Change: pglsn(w.lsn)}
	var out []record
	for range n {
		o := w.newOrder()
		o.snapshot = true
		out = append(out, w.rowRecord(pipeline.OpRead, pos, o, nil, false))
	}
	return out
}

// txn emits one source transaction of one to three changes.
func (w *workload) txn() []record {
	n := 1 + w.rnd.IntN(3)
	w.txID++
	var out []record
	base := w.lsn + 10
	w.lsn += uint64(10 + 10*n)
	commit := pglsn(w.lsn)
	for i := range n {
		pos := pipeline.Position{Commit: commit, Change: pglsn(base + uint64(10*i))}
		out = append(out, w.change(pos)...)
	}
	return out
}

func pglsn(v uint64) pglogrepl.LSN { return pglogrepl.LSN(v) }

// change applies one random change to the model and returns its records.
func (w *workload) change(pos pipeline.Position) []record {
	r := w.rnd.IntN(100)
	o := w.pick()
	noteChanged := false
	switch {
	case w.truncates && r == 0 && w.rnd.IntN(20) == 0:
		for id := range w.live {
			w.removeLive(id)
		}
		ev := w.event(pipeline.OpTruncate, pos, nil, nil, nil)
		return []record{{value: ev.AppendJSON(nil), pos: pos, op: pipeline.OpTruncate}}
	case o == nil || r < 30:
		return []record{w.rowRecord(pipeline.OpCreate, pos, w.newOrder(), nil, false)}
	case r < 45 && o.status == "created":
		o.status = "paid"
	case r < 58 && o.status == "paid":
		o.status = "shipped"
	case r < 66 && (o.status == "created" || o.status == "paid"):
		o.status = "cancelled"
	case r < 74:
		o.item = 1 + w.rnd.Int64N(w.items)
		w.touched[o.item] = true
	case r < 82:
		o.qty = 1 + w.rnd.Int64N(9)
	case r < 85:
		o.note = fmt.Sprintf("note %d changed %d", o.id, w.rnd.IntN(1000))
		noteChanged = true
	case r < 87:
		// A primary-key change: before holds the old key.
		w.removeLive(o.id)
		old := o.id
		o.id = w.nextID
		w.nextID++
		w.addLive(o)
		before := pipeline.Row{{Name: "id", Value: json.RawMessage(strconv.FormatInt(old, 10))}}
		return []record{w.rowRecord(pipeline.OpUpdate, pos, o, before, false)}
	case r < 95:
		w.removeLive(o.id)
		key := keyJSON(o.id)
		before := pipeline.Row{{Name: "id", Value: json.RawMessage(strconv.FormatInt(o.id, 10))}}
		ev := w.event(pipeline.OpDelete, pos, before, nil, nil)
		return []record{
			{key: key, value: ev.AppendJSON(nil), pos: pos, op: pipeline.OpDelete},
			{key: key, pos: pos, op: pipeline.OpDelete}, // tombstone
		}
	default:
		o.coupon = map[bool]string{true: "", false: "SAVE" + strconv.Itoa(w.rnd.IntN(50))}[w.rnd.IntN(2) == 0]
	}
	keepNote := !noteChanged && w.rnd.IntN(2) == 0
	return []record{w.rowRecord(pipeline.OpUpdate, pos, o, nil, keepNote)}
}

func (w *workload) newOrder() *modelOrder {
	o := &modelOrder{
		id: w.nextID, item: 1 + w.rnd.Int64N(w.items), qty: 1 + w.rnd.Int64N(9), status: "created",
		note: fmt.Sprintf("note for order %d: %s", w.nextID, "a long text that Postgres would TOAST"),
	}
	w.nextID++
	w.touched[o.item] = true
	w.addLive(o)
	return o
}

// rowRecord renders o's current state as an event. Numbers are written
// as JSON numbers or strings at random (integer, numeric, text columns);
// with keepNote the note is left out as an unchanged TOASTed value.
func (w *workload) rowRecord(op pipeline.Op, pos pipeline.Position, o *modelOrder, before pipeline.Row, keepNote bool) record {
	num := func(n int64) string {
		switch w.rnd.IntN(3) {
		case 0:
			return strconv.FormatInt(n, 10)
		case 1:
			return `"` + strconv.FormatInt(n, 10) + `"`
		}
		return `"` + strconv.FormatInt(n, 10) + `.00"`
	}
	after := pipeline.Row{
		{Name: "id", Value: json.RawMessage(strconv.FormatInt(o.id, 10))},
		{Name: "item_id", Value: json.RawMessage(num(o.item))},
		{Name: "quantity", Value: json.RawMessage(num(o.qty))},
		{Name: "status", Value: json.RawMessage(strconv.Quote(o.status))},
	}
	var unchanged []string
	if keepNote {
		unchanged = []string{"note"}
	} else {
		after = append(after, pipeline.Column{Name: "note", Value: pipeline.AppendString(nil, o.note)})
	}
	coupon := json.RawMessage("null")
	if o.coupon != "" {
		coupon = pipeline.AppendString(nil, o.coupon)
	}
	after = append(after, pipeline.Column{Name: "coupon", Value: coupon})
	// What the row cache must hold: the columns' text, NULLs absent.
	fields := map[string]string{}
	for _, c := range after {
		if string(c.Value) != "null" {
			fields[c.Name] = pipeline.ScalarText(c.Value)
		}
	}
	fields["note"] = o.note
	o.lastRow = fields
	ev := w.event(op, pos, before, after, unchanged)
	return record{key: keyJSON(o.id), value: ev.AppendJSON(nil), pos: pos, op: op}
}

func (w *workload) event(op pipeline.Op, pos pipeline.Position, before, after pipeline.Row, unchanged []string) *pipeline.Event {
	snap := "false"
	if op == pipeline.OpRead {
		snap = "true"
	}
	now := time.Now().UnixMilli()
	ev := &pipeline.Event{
		Before: before, After: after, Unchanged: unchanged, Op: op, TsMs: now,
		Source: pipeline.Source{Connector: "postgresql", Name: "cdcsync", DB: "shop", Schema: "public", Table: "orders",
			TxID: w.txID, TsMs: now, Snapshot: snap},
	}
	ev.SetPosition(pos)
	return ev
}

func keyJSON(id int64) []byte { return []byte(`{"id":` + strconv.FormatInt(id, 10) + `}`) }

// expectedCounters returns reserved and shipped per item from the model.
func (w *workload) expectedCounters() map[int64][2]int64 {
	out := map[int64][2]int64{}
	for _, o := range w.live {
		c := out[o.item]
		switch o.status {
		case "created", "paid":
			c[0] += o.qty
		case "shipped":
			c[1] += o.qty
		}
		out[o.item] = c
	}
	return out
}

// expectedRows returns the row cache the model implies: key -> fields.
func (w *workload) expectedRows() map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, o := range w.live {
		out["cdc:public.orders:"+strconv.FormatInt(o.id, 10)] = o.lastRow
	}
	return out
}

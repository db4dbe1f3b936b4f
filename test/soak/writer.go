package soak

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// order is one row of public.orders as a writer last committed it.
type order struct {
	Item   int64
	Qty    int64
	Status string
	Rev    int64
}

// Operations the writers perform, as an order service would.
const (
	opCreate = "create" // insert, status created
	opPay    = "pay"    // created -> paid
	opShip   = "ship"   // paid -> shipped
	opCancel = "cancel" // created or paid -> cancelled
	opChange = "change" // quantity or item of a created or paid order
	opDelete = "delete" // the row goes
)

// Change is one committed row change, as the ledger keeps it: every one
// must be on Kafka. Deleted changes carry the row's last state.
type Change struct {
	ID      int64
	Op      string
	Row     order // state after the change (before it, for a delete)
	Deleted bool
}

// step is one statement of a planned transaction.
type step struct {
	op     string
	id     int64
	before *order // nil for a create
	after  *order // nil for a delete
}

// writer is one order service connection writing its own orders: ids are
// id ≡ writer (mod writers), so no two writers touch the same row and a
// write whose outcome is unknown can be resolved by reading it back.
type writer struct {
	n, of    int
	url      string
	items    int
	interval time.Duration
	rng      *rand.Rand
	conn     *pgx.Conn
	live     map[int64]order
	liveIDs  []int64
	nextSeq  int64
	ledger   []Change
	stats    writerStats
}

// writerStats count what happened to the writer's transactions.
type writerStats struct {
	Txns         int            // committed transactions
	Ops          map[string]int // committed operations by kind
	Failed       int            // transactions that returned an error (all are read back)
	Unknown      int            // of which the error came from COMMIT: outcome unknown
	ResolvedIn   int            // failed transactions found committed when read back
	Inconsistent int            // read back half applied: an atomicity violation
	Errors       []string       // first few distinct errors, for the log
}

func newWriter(n, of int, url string, items int, rate int, seed uint64) *writer {
	return &writer{
		n: n, of: of, url: url, items: items,
		interval: time.Duration(float64(time.Second) * float64(of) / float64(rate)),
		rng:      rand.New(rand.NewPCG(seed, uint64(n))),
		live:     map[int64]order{},
		stats:    writerStats{Ops: map[string]int{}},
	}
}

// run writes until ctx ends. The transaction in progress when ctx ends is
// finished and, if its outcome is unknown, resolved.
func (w *writer) run(ctx context.Context) error {
	defer func() {
		if w.conn != nil {
			_ = w.conn.Close(context.Background())
		}
	}()
	next := time.Now()
	for ctx.Err() == nil {
		steps := w.plan()
		if err := w.apply(steps); err != nil {
			return err
		}
		next = next.Add(w.interval)
		if d := time.Until(next); d > 0 {
			sleep(ctx, d)
		} else if d < -time.Second {
			next = time.Now() // behind after an outage: do not burst
		}
	}
	return nil
}

// apply runs steps in one transaction. On any error the outcome is read
// back: a COMMIT whose answer was lost to a crash may have committed.
func (w *writer) apply(steps []step) error {
	err := w.exec(steps)
	if err == nil {
		w.commit(steps)
		return nil
	}
	if errors.Is(err, errPrecondition) {
		return fmt.Errorf("writer %d: %w", w.n, err)
	}
	w.stats.Failed++
	if errors.Is(err, errCommit) {
		w.stats.Unknown++
	}
	w.note(err)
	committed, err := w.resolve(steps)
	if err != nil {
		return err
	}
	if committed {
		w.stats.ResolvedIn++
		w.commit(steps)
	}
	return nil
}

func (w *writer) note(err error) {
	if len(w.stats.Errors) < 5 {
		w.stats.Errors = append(w.stats.Errors, err.Error())
	}
}

// connect (re)connects, retrying with backoff until deadline.
func (w *writer) connect(deadline time.Time) error {
	if w.conn != nil && !w.conn.IsClosed() {
		return nil
	}
	backoff := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		conn, err := pgx.Connect(ctx, w.url)
		cancel()
		if err == nil {
			w.conn = conn
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("writer %d: order database unreachable: %w", w.n, err)
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, time.Second)
	}
}

// dropConn forgets a connection that failed.
func (w *writer) dropConn() {
	if w.conn != nil {
		_ = w.conn.Close(context.Background())
		w.conn = nil
	}
}

// exec runs the transaction; any error leaves its outcome unknown to the
// caller.
func (w *writer) exec(steps []step) (err error) {
	if err := w.connect(time.Now().Add(2 * time.Minute)); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer func() {
		if err != nil {
			w.dropConn()
		}
	}()
	tx, err := w.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	for _, s := range steps {
		if err := execStep(ctx, tx, s); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("%w: %w", errCommit, err)
	}
	return nil
}

// errCommit marks an error from COMMIT: the transaction may or may not
// have committed.
var errCommit = errors.New("commit")

// errPrecondition means a row was not in the state the writer committed
// last: the soak's bookkeeping (or the database) is wrong.
var errPrecondition = errors.New("row is not in the state last committed")

func execStep(ctx context.Context, tx pgx.Tx, s step) error {
	var (
		tag interface{ RowsAffected() int64 }
		err error
	)
	switch {
	case s.before == nil:
		tag, err = tx.Exec(ctx, `INSERT INTO public.orders (id, item_id, quantity, status, rev) VALUES ($1, $2, $3, $4, $5)`,
			s.id, s.after.Item, s.after.Qty, s.after.Status, s.after.Rev)
	case s.after == nil:
		tag, err = tx.Exec(ctx, `DELETE FROM public.orders WHERE id = $1 AND rev = $2`, s.id, s.before.Rev)
	default:
		tag, err = tx.Exec(ctx, `UPDATE public.orders SET item_id = $2, quantity = $3, status = $4, rev = $5 WHERE id = $1 AND rev = $6`,
			s.id, s.after.Item, s.after.Qty, s.after.Status, s.after.Rev, s.before.Rev)
	}
	if err != nil {
		return fmt.Errorf("%s order %d: %w", s.op, s.id, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("%s order %d: %w", s.op, s.id, errPrecondition)
	}
	return nil
}

// resolve reads the touched rows back and tells whether the transaction
// committed: every row in its planned final state means yes, every row in
// its state before means no; anything else is a half-applied transaction.
func (w *writer) resolve(steps []step) (bool, error) {
	before, after := map[int64]*order{}, map[int64]*order{}
	var ids []int64
	for _, s := range steps {
		if _, seen := before[s.id]; !seen {
			before[s.id] = s.before
			ids = append(ids, s.id)
		}
		after[s.id] = s.after
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		actual, err := w.readBack(ids, deadline)
		if err != nil {
			if time.Now().After(deadline) {
				return false, fmt.Errorf("writer %d: resolve a transaction's outcome: %w", w.n, err)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		asAfter, asBefore := true, true
		for _, id := range ids {
			asAfter = asAfter && sameOrder(actual[id], after[id])
			asBefore = asBefore && sameOrder(actual[id], before[id])
		}
		switch {
		case asAfter:
			return true, nil
		case asBefore:
			return false, nil
		default:
			w.stats.Inconsistent++
			return false, fmt.Errorf("writer %d: transaction %v is half applied: found %v", w.n, describe(steps), actual)
		}
	}
}

func (w *writer) readBack(ids []int64, deadline time.Time) (map[int64]*order, error) {
	if err := w.connect(deadline); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, err := w.conn.Query(ctx, `SELECT id, item_id, quantity, status, rev FROM public.orders WHERE id = ANY($1)`, ids)
	if err != nil {
		w.dropConn()
		return nil, err
	}
	out := map[int64]*order{}
	for rows.Next() {
		var id int64
		var o order
		if err := rows.Scan(&id, &o.Item, &o.Qty, &o.Status, &o.Rev); err != nil {
			rows.Close()
			w.dropConn()
			return nil, err
		}
		out[id] = &o
	}
	if err := rows.Err(); err != nil {
		w.dropConn()
		return nil, err
	}
	return out, nil
}

func sameOrder(a, b *order) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func describe(steps []step) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = fmt.Sprintf("%s %d", s.op, s.id)
	}
	return out
}

// commit records a committed transaction in the model and the ledger.
func (w *writer) commit(steps []step) {
	w.stats.Txns++
	for _, s := range steps {
		w.stats.Ops[s.op]++
		switch {
		case s.after == nil:
			w.ledger = append(w.ledger, Change{ID: s.id, Op: s.op, Row: *s.before, Deleted: true})
			w.forget(s.id)
		default:
			w.ledger = append(w.ledger, Change{ID: s.id, Op: s.op, Row: *s.after})
			if _, ok := w.live[s.id]; !ok {
				w.liveIDs = append(w.liveIDs, s.id)
			}
			w.live[s.id] = *s.after
		}
	}
}

func (w *writer) forget(id int64) {
	delete(w.live, id)
	for i, v := range w.liveIDs {
		if v == id {
			w.liveIDs[i] = w.liveIDs[len(w.liveIDs)-1]
			w.liveIDs = w.liveIDs[:len(w.liveIDs)-1]
			return
		}
	}
}

// Operation mix, in percent of steps.
var opWeights = [...]struct {
	op     string
	weight int
}{{opCreate, 28}, {opPay, 18}, {opShip, 14}, {opCancel, 8}, {opChange, 16}, {opDelete, 16}}

// plan draws a transaction of one to three steps against the writer's
// last committed state; a step may change an order an earlier step of the
// same transaction changed.
func (w *writer) plan() []step {
	n := 1
	switch r := w.rng.IntN(100); {
	case r >= 85:
		n = 3
	case r >= 60:
		n = 2
	}
	cur := map[int64]*order{} // states as of the steps planned so far
	state := func(id int64) *order {
		if o, ok := cur[id]; ok {
			return o
		}
		if o, ok := w.live[id]; ok {
			return &o
		}
		return nil
	}
	var steps []step
	for range n {
		s := w.draw(state)
		cur[s.id] = s.after
		steps = append(steps, s)
	}
	return steps
}

func (w *writer) draw(state func(int64) *order) step {
	r := w.rng.IntN(100)
	op := opCreate
	for _, c := range opWeights {
		if r < c.weight {
			op = c.op
			break
		}
		r -= c.weight
	}
	if op != opCreate {
		if s, ok := w.drawOn(op, state); ok {
			return s
		}
	}
	w.nextSeq++
	id := w.nextSeq*int64(w.of) + int64(w.n)
	return step{op: opCreate, id: id, after: &order{
		Item: 1 + w.rng.Int64N(int64(w.items)), Qty: 1 + w.rng.Int64N(5), Status: "created", Rev: 1,
	}}
}

// drawOn finds an order op applies to among a few random ones.
func (w *writer) drawOn(op string, state func(int64) *order) (step, bool) {
	if len(w.liveIDs) == 0 {
		return step{}, false
	}
	for range 8 {
		id := w.liveIDs[w.rng.IntN(len(w.liveIDs))]
		cur := state(id)
		if cur == nil {
			continue // deleted earlier in this transaction
		}
		next := *cur
		next.Rev++
		switch op {
		case opPay:
			if cur.Status != "created" {
				continue
			}
			next.Status = "paid"
		case opShip:
			if cur.Status != "paid" {
				continue
			}
			next.Status = "shipped"
		case opCancel:
			if cur.Status != "created" && cur.Status != "paid" {
				continue
			}
			next.Status = "cancelled"
		case opChange:
			if cur.Status != "created" && cur.Status != "paid" {
				continue
			}
			if w.rng.IntN(2) == 0 {
				next.Qty = 1 + (cur.Qty+w.rng.Int64N(4))%5
			} else {
				next.Item = 1 + (cur.Item+w.rng.Int64N(int64(w.items)-1))%int64(w.items)
			}
		case opDelete:
			return step{op: op, id: id, before: cur}, true
		}
		return step{op: op, id: id, before: cur, after: &next}, true
	}
	return step{}, false
}

package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Kinds of order writes.
const (
	opCreate   = "create"
	opPay      = "pay"
	opShip     = "ship"
	opCancel   = "cancel"
	opItem     = "change item"
	opQuantity = "change quantity"
	opDelete   = "delete"
	opMulti    = "multi-order transaction"
)

var allOps = []string{opCreate, opPay, opShip, opCancel, opItem, opQuantity, opDelete, opMulti}

// writeStats counts, per kind, the writes that changed a row (an update
// of an order deleted or in the wrong status meanwhile changes nothing).
type writeStats struct {
	mu      sync.Mutex
	changed map[string]int64
	retried int64 // transactions rolled back by a serialization failure or deadlock
	txns    int64 // transactions committed
}

func (s *writeStats) add(kind string, rows int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = map[string]int64{}
	}
	s.changed[kind] += rows
	s.txns++
}

// total is the number of transactions committed.
func (s *writeStats) total() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.txns
}

func (s *writeStats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	for _, k := range allOps {
		parts = append(parts, fmt.Sprintf("%s %d", k, s.changed[k]))
	}
	return strings.Join(parts, ", ") + fmt.Sprintf(" (%d transactions retried)", s.retried)
}

// writer changes orders at random until ctx ends: creates them, pays,
// ships and cancels them, moves them to another item, changes their
// quantity, deletes them, and now and then changes several orders in one
// transaction. Each statement is its own transaction otherwise, as an
// order service would write.
type writer struct {
	pool   *pgxpool.Pool
	rnd    *rand.Rand
	items  int64
	maxID  *atomic.Int64 // highest order id created so far, for random picks
	stats  *writeStats
	period time.Duration // one write per period at most
}

func (w *writer) run(ctx context.Context) error {
	tick := time.NewTicker(w.period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		kind := w.pick()
		rows, err := w.write(ctx, kind)
		switch {
		case ctx.Err() != nil:
			return nil
		case retryable(err):
			w.stats.mu.Lock()
			w.stats.retried++
			w.stats.mu.Unlock()
		case err != nil:
			return fmt.Errorf("%s: %w", kind, err)
		default:
			w.stats.add(kind, rows)
		}
	}
}

// pick draws a kind of write: mostly lifecycle steps, enough creates to
// keep orders coming.
func (w *writer) pick() string {
	r := w.rnd.IntN(100)
	switch {
	case r < 25:
		return opCreate
	case r < 40:
		return opPay
	case r < 52:
		return opShip
	case r < 60:
		return opCancel
	case r < 70:
		return opItem
	case r < 80:
		return opQuantity
	case r < 90:
		return opDelete
	default:
		return opMulti
	}
}

func (w *writer) randomItem() int64 { return 1 + w.rnd.Int64N(w.items) }

func (w *writer) randomOrder() int64 { return 1 + w.rnd.Int64N(max(w.maxID.Load(), 1)) }

// write does one write of kind and returns the rows it changed.
func (w *writer) write(ctx context.Context, kind string) (int64, error) {
	if kind == opMulti {
		return w.multi(ctx)
	}
	return w.exec(ctx, w.pool, kind, w.randomOrder())
}

// querier is a pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (w *writer) exec(ctx context.Context, q querier, kind string, id int64) (int64, error) {
	var (
		tag pgconn.CommandTag
		err error
	)
	switch kind {
	case opCreate:
		var newID int64
		err = q.QueryRow(ctx, `INSERT INTO orders (item_id, quantity, status) VALUES ($1, $2, 'created') RETURNING id`,
			w.randomItem(), 1+w.rnd.IntN(5)).Scan(&newID)
		if err != nil {
			return 0, err
		}
		for cur := w.maxID.Load(); newID > cur && !w.maxID.CompareAndSwap(cur, newID); cur = w.maxID.Load() {
		}
		return 1, nil
	case opPay:
		tag, err = q.Exec(ctx, `UPDATE orders SET status = 'paid', updated_at = now() WHERE id = $1 AND status = 'created'`, id)
	case opShip:
		tag, err = q.Exec(ctx, `UPDATE orders SET status = 'shipped', updated_at = now() WHERE id = $1 AND status = 'paid'`, id)
	case opCancel:
		tag, err = q.Exec(ctx, `UPDATE orders SET status = 'cancelled', updated_at = now() WHERE id = $1 AND status IN ('created', 'paid')`, id)
	case opItem:
		tag, err = q.Exec(ctx, `UPDATE orders SET item_id = $2, updated_at = now() WHERE id = $1 AND status IN ('created', 'paid')`, id, w.randomItem())
	case opQuantity:
		tag, err = q.Exec(ctx, `UPDATE orders SET quantity = $2, updated_at = now() WHERE id = $1 AND status IN ('created', 'paid')`, id, 1+w.rnd.IntN(9))
	case opDelete:
		tag, err = q.Exec(ctx, `DELETE FROM orders WHERE id = $1`, id)
	default:
		return 0, fmt.Errorf("unknown write %q", kind)
	}
	return tag.RowsAffected(), err
}

// multi changes two to four orders in one transaction (a customer's
// basket: some new, some changed), locking existing ones in id order so
// that concurrent writers do not deadlock.
func (w *writer) multi(ctx context.Context) (int64, error) {
	ids := make([]int64, 1+w.rnd.IntN(3))
	for i := range ids {
		ids[i] = w.randomOrder()
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var rows int64
	err := pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		n, err := w.exec(ctx, tx, opCreate, 0)
		if err != nil {
			return err
		}
		rows += n
		for _, id := range ids {
			kind := []string{opPay, opShip, opCancel, opItem, opQuantity, opDelete}[w.rnd.IntN(6)]
			n, err := w.exec(ctx, tx, kind, id)
			if err != nil {
				return err
			}
			rows += n
		}
		return nil
	})
	return rows, err
}

// retryable reports a transaction Postgres rolled back because of a
// concurrent one (deadlock, serialization failure): the writer moves on.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcsync/cdcsync/outbox"
)

// Order statuses, DESIGN.md's defaults.
const (
	statusCreated   = "created"
	statusPaid      = "paid"
	statusShipped   = "shipped"
	statusCancelled = "cancelled"
)

// generator plays the order service: it writes orders to the order
// database only, at a steady rate. Each write is one transaction: create
// an order (publishing OrderCreated through the outbox in the same
// transaction), pay, ship or cancel one, change its quantity or item, or
// delete a finished one. It remembers the ids it wrote by status, so that
// every write is a single statement by primary key.
type generator struct {
	pool  *pgxpool.Pool
	pub   *outbox.Publisher
	items int
	rate  int
	rng   *rand.Rand

	// Ids by status; only run's goroutine touches them.
	created, paid, finished []int64

	writes  atomic.Int64 // order transactions committed
	creates atomic.Int64 // orders created, i.e. OrderCreated events published
}

func newGenerator(pool *pgxpool.Pool, items, rate int) (*generator, error) {
	pub, err := outbox.New() // message mode: capture's default CDCSYNC_OUTBOX_PREFIX
	if err != nil {
		return nil, err
	}
	return &generator{pool: pool, pub: pub, items: items, rate: rate,
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 42))}, nil
}

// tick is how often the generator wakes up to write its share.
const tick = 20 * time.Millisecond

// run writes orders until ctx ends. It returns nil then, or the first
// failed write.
func (g *generator) run(ctx context.Context) error {
	t := time.NewTicker(tick)
	defer t.Stop()
	last := time.Now()
	var due float64
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			// Writes owed since the last tick; a backlog from a slow
			// database is capped at one second, not caught up in a burst.
			due = min(due+float64(g.rate)*now.Sub(last).Seconds(), float64(g.rate))
			last = now
		}
		for ; due >= 1 && ctx.Err() == nil; due-- {
			if err := g.writeOne(ctx); err != nil {
				return err
			}
		}
	}
}

// writeTimeout bounds one write.
const writeTimeout = 10 * time.Second

// writeOne performs one write to its end even when ctx ends meanwhile: a
// write cut off by a cancellation may or may not have committed, and the
// generator's record of the orders would be off.
func (g *generator) writeOne(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	return g.write(wctx)
}

// Order mix, in parts per hundred. While many orders are open, fewer are
// created; while many are finished, more are deleted: the table stays
// around ten thousand rows however long the demo runs.
const (
	maxOpen     = 3000
	maxFinished = 5000
)

// write performs one randomly chosen order write.
func (g *generator) write(ctx context.Context) error {
	createW, deleteW := 35, 8
	if len(g.created)+len(g.paid) > maxOpen {
		createW = 10
	}
	if len(g.finished) > maxFinished {
		deleteW = 40
	}
	weights := []struct {
		w  int
		fn func(context.Context) (bool, error)
	}{
		{createW, g.create},
		{20, g.pay},
		{15, g.ship},
		{8, g.cancel},
		{10, g.changeQuantity},
		{4, g.changeItem},
		{deleteW, g.delete},
	}
	total := 0
	for _, w := range weights {
		total += w.w
	}
	n := g.rng.IntN(total)
	for _, w := range weights {
		if n -= w.w; n < 0 {
			done, err := w.fn(ctx)
			if err == nil && !done {
				// Nothing to act on yet (no paid order to ship...).
				_, err = g.create(ctx)
			}
			if err == nil {
				g.writes.Add(1)
			}
			return err
		}
	}
	return nil
}

func (g *generator) item() int64     { return int64(1 + g.rng.IntN(g.items)) }
func (g *generator) quantity() int64 { return int64(1 + g.rng.IntN(5)) }

// pick returns a random index of list and the id there.
func (g *generator) pick(list []int64) (int, int64, bool) {
	if len(list) == 0 {
		return 0, 0, false
	}
	i := g.rng.IntN(len(list))
	return i, list[i], true
}

// remove deletes index i of list (order does not matter).
func remove(list *[]int64, i int) {
	l := *list
	l[i] = l[len(l)-1]
	*list = l[:len(l)-1]
}

// orderCreated is the payload of the OrderCreated event.
type orderCreated struct {
	OrderID  int64 `json:"order_id"`
	ItemID   int64 `json:"item_id"`
	Quantity int64 `json:"quantity"`
}

// create inserts an order and publishes OrderCreated in the same
// transaction: the event reaches Kafka if and only if the order commits.
func (g *generator) create(ctx context.Context) (bool, error) {
	item, qty := g.item(), g.quantity()
	var id int64
	err := pgx.BeginFunc(ctx, g.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO public.orders (item_id, quantity, status) VALUES ($1, $2, $3) RETURNING id`,
			item, qty, statusCreated).Scan(&id)
		if err != nil {
			return fmt.Errorf("insert order: %w", err)
		}
		payload, err := json.Marshal(orderCreated{OrderID: id, ItemID: item, Quantity: qty})
		if err != nil {
			return err
		}
		return g.pub.Publish(ctx, tx, outbox.Event{
			Aggregate: "order", AggregateID: strconv.FormatInt(id, 10), Type: "OrderCreated", Payload: payload,
		})
	})
	if err != nil {
		return false, fmt.Errorf("create order: %w", err)
	}
	g.created = append(g.created, id)
	g.creates.Add(1)
	return true, nil
}

// move sets the status of a random order of from and, once that is
// committed, moves it to the list to. It reports false when from is empty.
func (g *generator) move(ctx context.Context, from, to *[]int64, status string) (bool, error) {
	i, id, ok := g.pick(*from)
	if !ok {
		return false, nil
	}
	if _, err := g.pool.Exec(ctx, `UPDATE public.orders SET status = $2 WHERE id = $1`, id, status); err != nil {
		return false, fmt.Errorf("set order %d %s: %w", id, status, err)
	}
	remove(from, i)
	*to = append(*to, id)
	return true, nil
}

func (g *generator) pay(ctx context.Context) (bool, error) {
	return g.move(ctx, &g.created, &g.paid, statusPaid)
}

func (g *generator) ship(ctx context.Context) (bool, error) {
	return g.move(ctx, &g.paid, &g.finished, statusShipped)
}

// cancel cancels an open order, created or paid.
func (g *generator) cancel(ctx context.Context) (bool, error) {
	from := &g.created
	if g.rng.IntN(2) == 0 {
		from = &g.paid
	}
	return g.move(ctx, from, &g.finished, statusCancelled)
}

// changeQuantity changes the quantity of an open order: the sink moves
// the difference in the item's reserved stock.
func (g *generator) changeQuantity(ctx context.Context) (bool, error) {
	_, id, ok := g.pick(g.created)
	if !ok {
		return false, nil
	}
	if _, err := g.pool.Exec(ctx, `UPDATE public.orders SET quantity = $2 WHERE id = $1`, id, g.quantity()); err != nil {
		return false, fmt.Errorf("change quantity of order %d: %w", id, err)
	}
	return true, nil
}

// changeItem moves an open order to another item: the reservation moves
// from one item to the other.
func (g *generator) changeItem(ctx context.Context) (bool, error) {
	_, id, ok := g.pick(g.created)
	if !ok {
		return false, nil
	}
	if _, err := g.pool.Exec(ctx, `UPDATE public.orders SET item_id = $2 WHERE id = $1`, id, g.item()); err != nil {
		return false, fmt.Errorf("change item of order %d: %w", id, err)
	}
	return true, nil
}

// delete removes a shipped or cancelled order (archiving): a deleted
// shipped order releases its shipped count, as DESIGN.md says.
func (g *generator) delete(ctx context.Context) (bool, error) {
	i, id, ok := g.pick(g.finished)
	if !ok {
		return false, nil
	}
	if _, err := g.pool.Exec(ctx, `DELETE FROM public.orders WHERE id = $1`, id); err != nil {
		return false, fmt.Errorf("delete order %d: %w", id, err)
	}
	remove(&g.finished, i)
	return true, nil
}

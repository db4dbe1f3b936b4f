package verify

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/pipeline"
)

// CheckProjection names the comparison of the inventory sink's order
// projection (cdcsync_order_projection) with the orders table.
const CheckProjection = "order_projection"

// projectionSQL reads the projection in the order orderSQL reads the
// orders (byte order, whatever each database's collation).
const projectionSQL = `SELECT order_id, item_id, quantity, status, deleted, epoch, commit_lsn
	FROM cdcsync_order_projection ORDER BY order_id COLLATE "C"`

// ordersSQL reads every order's id (as the sink renders it) and the
// columns that decide its contribution.
func (v *Verifier) ordersSQL() (string, error) {
	inv := v.cfg.Inventory
	schema, table, ok := strings.Cut(inv.OrdersTable, ".")
	if !ok {
		return "", fmt.Errorf("orders table %q: want schema.table", inv.OrdersTable)
	}
	id := pgx.Identifier{inv.OrderIDColumn}.Sanitize()
	return `SELECT ` + id + `::text, ` + pgx.Identifier{inv.ItemColumn}.Sanitize() + `::bigint, ` +
		pgx.Identifier{inv.QuantityColumn}.Sanitize() + `::numeric::bigint, ` +
		pgx.Identifier{inv.StatusColumn}.Sanitize() + `::text FROM ` + pgx.Identifier{schema, table}.Sanitize() +
		` ORDER BY ` + id + `::text COLLATE "C"`, nil
}

// projected is an order as one side holds it.
type projected struct {
	id             string
	item, quantity *int64
	status         *string
	deleted        bool
	epoch, commit  int64
}

// checkProjection compares the projection with the orders, merging both in
// id order: every order must have a live row with its item, quantity and
// status; a live row without an order is unexpected; a deleted row (the
// tombstone of a deleted order) is fine. At a cut, rows changed at or after
// it are in flight. Without a projection table (an inventory store the sink
// did not set up) there is nothing to compare and the check is left out.
func (v *Verifier) checkProjection(ctx context.Context, src *pgx.Conn, c *cut) (*Check, error) {
	query, err := v.ordersSQL()
	if err != nil {
		return nil, err
	}
	var exists bool
	if err := v.inv.QueryRow(ctx, `SELECT to_regclass('cdcsync_order_projection') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("read the order projection: %w", err)
	}
	if !exists {
		return nil, nil
	}
	proj, err := v.inv.Query(ctx, projectionSQL)
	if err != nil {
		return nil, fmt.Errorf("read the order projection: %w", err)
	}
	defer proj.Close()
	orders, err := src.Query(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", v.cfg.OrdersTable, err)
	}
	defer orders.Close()

	ch := Check{Name: CheckProjection, Drifts: []Drift{}}
	col := collector{check: &ch, max: v.cfg.MaxReport}
	nextOrder := func() (*projected, error) {
		if !orders.Next() {
			return nil, orders.Err()
		}
		o := &projected{}
		return o, orders.Scan(&o.id, &o.item, &o.quantity, &o.status)
	}
	nextRow := func() (*projected, error) {
		if !proj.Next() {
			return nil, proj.Err()
		}
		p := &projected{}
		return p, proj.Scan(&p.id, &p.item, &p.quantity, &p.status, &p.deleted, &p.epoch, &p.commit)
	}
	o, err := nextOrder()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", v.cfg.OrdersTable, err)
	}
	p, err := nextRow()
	if err != nil {
		return nil, fmt.Errorf("read the order projection: %w", err)
	}
	inFlight := func(p *projected) bool {
		return c != nil && p != nil && c.after(pipeline.Position{Epoch: uint32(p.epoch), Commit: pglogrepl.LSN(p.commit)})
	}
	for o != nil || p != nil {
		advanceOrder, advanceRow := true, true
		switch {
		case p == nil || (o != nil && o.id < p.id):
			advanceRow = false
			ch.Compared++
			col.add(Drift{Key: o.id, Problem: Missing, Fields: orderFields(o, &projected{})})
		case o == nil || p.id < o.id:
			advanceOrder = false
			if p.deleted {
				break // a deleted order's tombstone
			}
			ch.Compared++
			if inFlight(p) {
				ch.AfterCut++
				break
			}
			col.add(Drift{Key: p.id, Problem: Unexpected, Fields: orderFields(&projected{}, p)})
		default:
			ch.Compared++
			f := orderFields(o, p)
			if p.deleted {
				f = append([]Field{{Name: "deleted", Expected: ptr("false"), Actual: ptr("true")}}, f...)
			}
			if len(f) > 0 {
				if inFlight(p) {
					ch.AfterCut++
					break
				}
				col.add(Drift{Key: o.id, Problem: Differs, Fields: f})
			}
		}
		if advanceOrder {
			if o, err = nextOrder(); err != nil {
				return nil, fmt.Errorf("read %s: %w", v.cfg.OrdersTable, err)
			}
		}
		if advanceRow {
			if p, err = nextRow(); err != nil {
				return nil, fmt.Errorf("read the order projection: %w", err)
			}
		}
	}
	return &ch, nil
}

// orderFields lists item, quantity and status where p differs from o.
func orderFields(o, p *projected) []Field {
	var f []Field
	add := func(name string, want, got *string) {
		if (want == nil) != (got == nil) || (want != nil && *want != *got) {
			f = append(f, Field{Name: name, Expected: want, Actual: got})
		}
	}
	add("item_id", intText(o.item), intText(p.item))
	add("quantity", intText(o.quantity), intText(p.quantity))
	add("status", o.status, p.status)
	return f
}

func intText(n *int64) *string {
	if n == nil {
		return nil
	}
	return ptr(strconv.FormatInt(*n, 10))
}

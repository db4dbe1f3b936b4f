package verify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/sink"
)

// projectedOrder is an order as the inventory projection holds it now.
type projectedOrder struct {
	id               string
	item, quantity   *int64
	status           *string
	deleted          bool
	snapshotItem     *int64 // the order at the cut (nil item: absent or NULL)
	snapshotQuantity *int64
	snapshotStatus   *string
}

// itemsAtCut reads inventory_items and the projection rows of orders
// changed at or after the cut in one transaction (the sink writes both in
// one), and takes the items back to the cut: each such order's current
// contribution is replaced by its contribution at the cut, read from the
// order database's cut snapshot. stored is inventory_items as read;
// atCut the items at the cut; changed counts the items taken back.
func (v *Verifier) itemsAtCut(ctx context.Context, src *pgx.Conn, c *cut) (stored, atCut []storedItem, changed int64, err error) {
	tx, err := v.inv.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, nil, 0, fmt.Errorf("read inventory_items: %w", err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	rows, err := tx.Query(ctx, storedSQL)
	if err != nil {
		return nil, nil, 0, storedErr(err)
	}
	var s storedItem
	_, err = pgx.ForEachRow(rows, []any{&s.item, &s.onHand, &s.reserved, &s.shipped}, func() error {
		stored = append(stored, s)
		return nil
	})
	if err != nil {
		return nil, nil, 0, storedErr(err)
	}
	rows, err = tx.Query(ctx, `SELECT order_id, item_id, quantity, status, deleted FROM cdcsync_order_projection
		WHERE (epoch, commit_lsn) >= ($2, $1)`, int64(c.pos.LSN), int64(c.pos.Epoch))
	if err != nil {
		return nil, nil, 0, fmt.Errorf("read the inventory projection: %w", err)
	}
	var orders []*projectedOrder
	var o projectedOrder
	_, err = pgx.ForEachRow(rows, []any{&o.id, &o.item, &o.quantity, &o.status, &o.deleted}, func() error {
		cp := o
		orders = append(orders, &cp)
		return nil
	})
	if err != nil {
		return nil, nil, 0, fmt.Errorf("read the inventory projection: %w", err)
	}
	if err := v.ordersAtCut(ctx, src, orders); err != nil {
		return nil, nil, 0, err
	}

	delta := map[int64][2]int64{} // item → reserved, shipped to add
	add := func(item, qty *int64, status *string, sign int64) {
		if item == nil || qty == nil || status == nil {
			return // contributes nothing, as in the sink
		}
		d := delta[*item]
		switch {
		case slices.Contains(v.cfg.ReservedStatuses, *status):
			d[0] += sign * *qty
		case slices.Contains(v.cfg.ShippedStatuses, *status):
			d[1] += sign * *qty
		}
		delta[*item] = d
	}
	for _, o := range orders {
		if !o.deleted {
			add(o.item, o.quantity, o.status, -1)
		}
		add(o.snapshotItem, o.snapshotQuantity, o.snapshotStatus, 1)
	}
	atCut = slices.Clone(stored)
	for i := range atCut {
		if d, ok := delta[atCut[i].item]; ok {
			atCut[i].reserved += d[0]
			atCut[i].shipped += d[1]
			delete(delta, atCut[i].item)
			if d != [2]int64{} {
				changed++
			}
		}
	}
	for item, d := range delta {
		// Items the sink created after the cut: at the cut they had no
		// row, which compares as zero.
		if d != [2]int64{} {
			atCut = append(atCut, storedItem{item: item, reserved: d[0], shipped: d[1]})
			changed++
		}
	}
	slices.SortFunc(atCut, func(a, b storedItem) int { return cmp.Compare(a.item, b.item) })
	return stored, atCut, changed, nil
}

// ordersAtCut fills in each order's state in the cut's snapshot.
func (v *Verifier) ordersAtCut(ctx context.Context, src *pgx.Conn, orders []*projectedOrder) error {
	if len(orders) == 0 {
		return nil
	}
	inv := v.cfg.Inventory
	schema, table, ok := strings.Cut(inv.OrdersTable, ".")
	if !ok {
		return fmt.Errorf("orders table %q: want schema.table", inv.OrdersTable)
	}
	byID := make(map[string]*projectedOrder, len(orders))
	ids := make([]string, 0, len(orders))
	for _, o := range orders {
		byID[o.id] = o
		ids = append(ids, o.id)
	}
	// The projection keys orders by the id's text, as the sink renders
	// it; ::text renders the usual key types (integers, uuid, text) alike.
	query := `SELECT ` + pgx.Identifier{inv.OrderIDColumn}.Sanitize() + `::text, ` +
		pgx.Identifier{inv.ItemColumn}.Sanitize() + `::bigint, ` +
		pgx.Identifier{inv.QuantityColumn}.Sanitize() + `::bigint, ` +
		pgx.Identifier{inv.StatusColumn}.Sanitize() + `::text FROM ` + pgx.Identifier{schema, table}.Sanitize() +
		` WHERE ` + pgx.Identifier{inv.OrderIDColumn}.Sanitize() + `::text = ANY($1::text[])`
	rows, err := src.Query(ctx, query, ids)
	if err != nil {
		return fmt.Errorf("read changed orders at the cut: %w", err)
	}
	var id string
	var item, qty *int64
	var status *string
	_, err = pgx.ForEachRow(rows, []any{&id, &item, &qty, &status}, func() error {
		if o := byID[id]; o != nil {
			o.snapshotItem, o.snapshotQuantity, o.snapshotStatus = item, qty, status
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read changed orders at the cut: %w", err)
	}
	return nil
}

// availabilityInFlight tells a cached availability that differs from its
// inventory row because a change is in flight from drift. The inventory
// sink writes each item's version (cdcsync_item_version) with the row, and
// the cache holds the version of the value it holds
// (cdcsync:available:version): read together, different versions mean a
// refresh is on its way (or the row moved on since), equal versions with
// different values mean drift. Without versions (an older store) the
// value is read again a few times and counts as drift only if it stays
// wrong without either side moving.
func (v *Verifier) availabilityInFlight(ctx context.Context, item int64, cached string) (bool, error) {
	for i := 0; i < 3; i++ {
		var avail int64
		var version *int64
		err := v.inv.QueryRow(ctx, `SELECT i.on_hand - i.reserved - i.shipped, v.version
			FROM inventory_items i LEFT JOIN cdcsync_item_version v USING (item_id) WHERE i.item_id = $1`, item).Scan(&avail, &version)
		if isUndefinedTable(err) {
			version = nil
			err = v.inv.QueryRow(ctx, `SELECT on_hand - reserved - shipped FROM inventory_items WHERE item_id = $1`, item).Scan(&avail)
		}
		if err != nil {
			return false, fmt.Errorf("read inventory item %d: %w", item, err)
		}
		// One MULTI: the refresh script writes value and version together.
		pipe := v.rdb.TxPipeline()
		val := pipe.Get(ctx, availabilityPrefix+itoa(item))
		ver := pipe.HGet(ctx, sink.AvailabilityVersionKey, itoa(item))
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return false, fmt.Errorf("read the availability of item %d: %w", item, err)
		}
		got, gotVer := val.Val(), ver.Val()
		if got == itoa(avail) {
			return true, nil // caught up
		}
		if version != nil && gotVer != "" {
			return gotVer != strconv.FormatInt(*version, 10), nil
		}
		if got != cached {
			return true, nil // moved
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return false, nil
}

func isUndefinedTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedTable
}

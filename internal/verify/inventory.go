package verify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/sink"
)

// redisBatch is how many keys one pipelined Redis round trip reads.
const redisBatch = 1000

// expectedItem is an item's stock as the orders say it should be.
type expectedItem struct {
	item, reserved, shipped int64
}

// storedItem is a row of inventory_items.
type storedItem struct {
	item, onHand, reserved, shipped int64
}

// expectedSQL aggregates the orders per item the way the inventory sink
// counts them: an order adds its quantity to reserved or shipped by its
// status; orders with a NULL item, quantity or status add nothing (as in
// the sink), but an item with any order is listed.
func (v *Verifier) expectedSQL() (string, error) {
	return expectedSQL(v.cfg.Inventory, "")
}

// expectedSQL is the aggregation over the orders of inv, restricted by
// the orders-table condition where when it is not empty.
func expectedSQL(inv config.Inventory, where string) (string, error) {
	schema, table, ok := strings.Cut(inv.OrdersTable, ".")
	if !ok {
		return "", fmt.Errorf("orders table %q: want schema.table", inv.OrdersTable)
	}
	if where != "" {
		where = " WHERE " + where
	}
	return `SELECT i, coalesce(sum(q) FILTER (WHERE s = ANY($1::text[])), 0)::bigint,
		coalesce(sum(q) FILTER (WHERE s = ANY($2::text[])), 0)::bigint
	FROM (SELECT ` + pgx.Identifier{inv.ItemColumn}.Sanitize() + `::bigint AS i, ` +
		pgx.Identifier{inv.QuantityColumn}.Sanitize() + ` AS q, ` +
		pgx.Identifier{inv.StatusColumn}.Sanitize() + `::text AS s FROM ` +
		pgx.Identifier{schema, table}.Sanitize() + where + `) o
	WHERE i IS NOT NULL GROUP BY i ORDER BY i`, nil
}

// ExpectedItem returns what the orders say item's reserved and shipped
// should be, counted as the inventory sink counts them (inv names the
// orders table, its columns and the status lists).
func ExpectedItem(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, inv config.Inventory, item int64) (reserved, shipped int64, err error) {
	query, err := expectedSQL(inv, pgx.Identifier{inv.ItemColumn}.Sanitize()+" = $3")
	if err != nil {
		return 0, 0, err
	}
	var id int64
	err = q.QueryRow(ctx, query, inv.ReservedStatuses, inv.ShippedStatuses, item).Scan(&id, &reserved, &shipped)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("sum orders of item %d: %w", item, err)
	}
	return reserved, shipped, nil
}

const storedSQL = `SELECT item_id, on_hand, reserved, shipped FROM inventory_items ORDER BY item_id`

func (v *Verifier) readExpected(ctx context.Context, src *pgx.Conn) ([]expectedItem, error) {
	query, err := v.expectedSQL()
	if err != nil {
		return nil, err
	}
	rows, err := src.Query(ctx, query, v.cfg.ReservedStatuses, v.cfg.ShippedStatuses)
	if err != nil {
		return nil, fmt.Errorf("sum orders of %s: %w", v.cfg.OrdersTable, err)
	}
	var out []expectedItem
	var e expectedItem
	_, err = pgx.ForEachRow(rows, []any{&e.item, &e.reserved, &e.shipped}, func() error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sum orders of %s: %w", v.cfg.OrdersTable, err)
	}
	return out, nil
}

func (v *Verifier) readStored(ctx context.Context) ([]storedItem, error) {
	rows, err := v.inv.Query(ctx, storedSQL)
	if err != nil {
		return nil, storedErr(err)
	}
	var out []storedItem
	var s storedItem
	_, err = pgx.ForEachRow(rows, []any{&s.item, &s.onHand, &s.reserved, &s.shipped}, func() error {
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, storedErr(err)
	}
	return out, nil
}

func storedErr(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedTable {
		return fmt.Errorf("read inventory_items: %w", ErrNoInventory)
	}
	return fmt.Errorf("read inventory_items: %w", err)
}

// checkInventory compares inventory_items with the orders, then (with
// Redis) the availability cache with inventory_items. At a cut (c not
// nil) the items are first taken back to the cut (see itemsAtCut).
func (v *Verifier) checkInventory(ctx context.Context, src *pgx.Conn, c *cut) ([]Check, error) {
	expected, err := v.readExpected(ctx, src)
	if err != nil {
		return nil, err
	}
	var stored, compared []storedItem
	var afterCut int64
	if c != nil {
		if stored, compared, afterCut, err = v.itemsAtCut(ctx, src, c); err != nil {
			return nil, err
		}
	} else {
		if stored, err = v.readStored(ctx); err != nil {
			return nil, err
		}
		compared = stored
	}
	items := compareItems(expected, compared, v.cfg.MaxReport)
	items.AfterCut = afterCut
	checks := []Check{items}
	proj, err := v.checkProjection(ctx, src, c)
	if err != nil {
		return nil, err
	}
	if proj != nil {
		checks = append(checks, *proj)
	}
	if v.availabilityChecked() {
		ch, err := v.checkAvailability(ctx, expected, stored, c != nil)
		if err != nil {
			return nil, err
		}
		vers, err := v.checkAvailabilityVersions(ctx, stored)
		if err != nil {
			return nil, err
		}
		checks = append(checks, ch, vers)
	}
	return checks, nil
}

// compareItems merges the two item lists, both sorted by item. An item
// missing on one side counts as zero there: a missing inventory row is
// drift only if the orders reserve or ship some of it.
func compareItems(expected []expectedItem, stored []storedItem, maxReport int) Check {
	c := Check{Name: CheckInventory, Drifts: []Drift{}}
	col := collector{check: &c, max: maxReport}
	i, j := 0, 0
	for i < len(expected) || j < len(stored) {
		c.Compared++
		switch {
		case j == len(stored) || (i < len(expected) && expected[i].item < stored[j].item):
			e := expected[i]
			i++
			if e.reserved != 0 || e.shipped != 0 {
				col.add(Drift{Key: itoa(e.item), Problem: Missing, Fields: []Field{
					{Name: "reserved", Expected: ptr(itoa(e.reserved))},
					{Name: "shipped", Expected: ptr(itoa(e.shipped))},
				}})
			}
		case i == len(expected) || stored[j].item < expected[i].item:
			s := stored[j]
			j++
			if s.reserved != 0 || s.shipped != 0 {
				col.add(Drift{Key: itoa(s.item), Problem: Unexpected,
					Fields: itemFields(expectedItem{item: s.item}, s)})
			}
		default:
			e, s := expected[i], stored[j]
			i++
			j++
			if f := itemFields(e, s); len(f) > 0 {
				col.add(Drift{Key: itoa(e.item), Problem: Differs, Fields: f})
			}
		}
	}
	return c
}

// itemFields lists the counters of s that differ from e.
func itemFields(e expectedItem, s storedItem) []Field {
	var f []Field
	if e.reserved != s.reserved {
		f = append(f, Field{Name: "reserved", Expected: ptr(itoa(e.reserved)), Actual: ptr(itoa(s.reserved))})
	}
	if e.shipped != s.shipped {
		f = append(f, Field{Name: "shipped", Expected: ptr(itoa(e.shipped)), Actual: ptr(itoa(s.shipped))})
	}
	return f
}

// availabilityPrefix is the key prefix of the availability cache
// (sink.AvailabilityKey).
var availabilityPrefix = strings.TrimSuffix(sink.AvailabilityKey(0), "0")

// checkAvailability compares each item's cached availability with its
// inventory row. The sink writes the cache whenever it applies an order of
// the item, so an item with orders must have a key; an item the sink never
// touched (stocked, never ordered) may have none. Keys for items without
// an inventory row are unexpected.
//
// With recheck set (a live comparison) a value that differs is read again
// with its inventory row a few times, and counts as drift only if it
// differs every time without either changing: the cache is written just
// after the inventory transaction commits, so a change can be in between.
func (v *Verifier) checkAvailability(ctx context.Context, expected []expectedItem, stored []storedItem, recheck bool) (Check, error) {
	c := Check{Name: CheckAvailability, Drifts: []Drift{}}
	col := collector{check: &c, max: v.cfg.MaxReport}
	ordered := make(map[int64]bool, len(expected))
	for _, e := range expected {
		ordered[e.item] = true
	}
	for start := 0; start < len(stored); start += redisBatch {
		batch := stored[start:min(start+redisBatch, len(stored))]
		keys := make([]string, len(batch))
		for i, s := range batch {
			keys[i] = sink.AvailabilityKey(s.item)
		}
		vals, err := v.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return c, fmt.Errorf("read availability cache: %w", err)
		}
		for i, s := range batch {
			c.Compared++
			want := itoa(s.onHand - s.reserved - s.shipped)
			got, ok := vals[i].(string)
			switch {
			case !ok && ordered[s.item]:
				col.add(Drift{Key: keys[i], Problem: Missing, Fields: []Field{{Name: "value", Expected: ptr(want)}}})
			case ok && got != want:
				if recheck {
					inFlight, err := v.availabilityInFlight(ctx, s.item, got)
					if err != nil {
						return c, err
					}
					if inFlight {
						c.AfterCut++
						continue
					}
				}
				col.add(Drift{Key: keys[i], Problem: Differs, Fields: []Field{{Name: "value", Expected: ptr(want), Actual: ptr(got)}}})
			}
		}
	}

	// Keys without an inventory row.
	var extra []string
	err := scanKeys(ctx, v.rdb, sink.AvailabilityKeyPattern(), func(key string) {
		id, err := strconv.ParseInt(strings.TrimPrefix(key, availabilityPrefix), 10, 64)
		if err == nil {
			if _, found := slices.BinarySearchFunc(stored, id, func(s storedItem, id int64) int {
				return cmp.Compare(s.item, id)
			}); found {
				return
			}
		}
		extra = append(extra, key)
	})
	if err != nil {
		return c, fmt.Errorf("scan availability cache: %w", err)
	}
	addUnexpected(&col, extra, func(key string) []Field {
		got, err := v.rdb.Get(ctx, key).Result()
		if err != nil {
			return nil
		}
		return []Field{{Name: "value", Actual: ptr(got)}}
	})
	return c, nil
}

// addUnexpected reports keys that should not exist, sorted; fields (may
// be nil) describes a reported key.
func addUnexpected(col *collector, keys []string, fields func(string) []Field) {
	slices.Sort(keys)
	col.check.Compared += int64(len(keys))
	for _, k := range keys {
		var f []Field
		if fields != nil && len(col.check.Drifts) < col.max {
			f = fields(k)
		}
		col.add(Drift{Key: k, Problem: Unexpected, Fields: f})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

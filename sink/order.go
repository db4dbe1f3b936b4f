package sink

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

// errPermanent marks an error about one message that no retry can fix: the
// message goes to the dead-letter topic.
var errPermanent = errors.New("message cannot be applied")

func permanentf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errPermanent, fmt.Sprintf(format, args...))
}

// orderState is what the inventory sink keeps about one order (a row of
// cdcsync_order_projection): enough to know the order's contribution to
// reserved and shipped stock, and the position of the change that set it.
// A nil Item, Quantity or Status is a NULL column: such an order counts for
// nothing, as SUM and a status match would treat it in SQL.
type orderState struct {
	Item     *int64
	Quantity *int64
	Status   *string
	// Deleted keeps the row of a deleted order as a tombstone, so that a
	// late older event for it is recognised as old and skipped.
	Deleted bool
	Pos     pipeline.Position
}

// orderChange is one order's new state as an event describes it.
type orderChange struct {
	msg *Message
	id  string
	pos pipeline.Position
	// The new column values; keepX is set when the column was an unchanged
	// TOASTed value, i.e. the stored value stays.
	item, quantity      *int64
	status              *string
	keepItem, keepQty   bool
	keepStatus, deleted bool
}

// orderSchema maps the order table's columns and statuses.
type orderSchema struct {
	schema, table                 string
	idCol, itemCol, qtyCol, stCol string
	reserved, shipped             []string
}

func newOrderSchema(inv config.Inventory) (orderSchema, error) {
	schema, table, err := splitTable(inv.OrdersTable)
	if err != nil {
		return orderSchema{}, err
	}
	return orderSchema{
		schema: schema, table: table,
		idCol: inv.OrderIDColumn, itemCol: inv.ItemColumn, qtyCol: inv.QuantityColumn, stCol: inv.StatusColumn,
		reserved: inv.ReservedStatuses, shipped: inv.ShippedStatuses,
	}, nil
}

// splitTable reads "schema.table".
func splitTable(s string) (schema, table string, err error) {
	schema, table, ok := strings.Cut(s, ".")
	if !ok || schema == "" || table == "" {
		return "", "", fmt.Errorf("table %q: want schema.table", s)
	}
	return schema, table, nil
}

// contribution returns what an order in state s adds to its item's
// reserved and shipped counters; ok is false when it adds nothing.
func (o *orderSchema) contribution(s *orderState) (item, reserved, shipped int64, ok bool) {
	if s == nil || s.Deleted || s.Item == nil || s.Quantity == nil || s.Status == nil {
		return 0, 0, 0, false
	}
	switch {
	case slices.Contains(o.reserved, *s.Status):
		return *s.Item, *s.Quantity, 0, true
	case slices.Contains(o.shipped, *s.Status):
		return *s.Item, 0, *s.Quantity, true
	}
	return *s.Item, 0, 0, true
}

// changes turns a row event of the orders table into order changes: one,
// or two when an update changed the order's primary key (the old id is
// deleted at the same position).
func (o *orderSchema) changes(m *Message) ([]orderChange, error) {
	ev := m.Event
	if ev.Source.Schema != o.schema || ev.Source.Table != o.table {
		return nil, permanentf("event of table %s.%s on the topic of %s.%s", ev.Source.Schema, ev.Source.Table, o.schema, o.table)
	}
	if err := o.checkKey(m.Key); err != nil {
		return nil, err
	}
	pos := ev.Position()
	if ev.Op == pipeline.OpDelete {
		id, err := o.orderID(ev.Before, m.Key)
		if err != nil {
			return nil, err
		}
		return []orderChange{{msg: m, id: id, pos: pos, deleted: true}}, nil
	}
	id, err := o.orderID(ev.After, m.Key)
	if err != nil {
		return nil, err
	}
	ch := orderChange{msg: m, id: id, pos: pos}
	if ch.item, ch.keepItem, err = o.intColumn(ev, o.itemCol); err != nil {
		return nil, err
	}
	if ch.quantity, ch.keepQty, err = o.intColumn(ev, o.qtyCol); err != nil {
		return nil, err
	}
	if ch.status, ch.keepStatus, err = o.textColumn(ev, o.stCol); err != nil {
		return nil, err
	}
	out := []orderChange{ch}
	if ev.Op == pipeline.OpUpdate && ev.Before != nil {
		if raw, ok := ev.Before.Get(o.idCol); ok {
			if old, err := idText(o.idCol, raw); err == nil && old != id {
				out = []orderChange{{msg: m, id: old, pos: pos, deleted: true}, ch}
			}
		}
	}
	return out, nil
}

// checkKey refuses events whose key is not exactly the order id column.
// Positions order the changes of one key; with an order id that is not the
// key (a unique order number, or one column of a composite key), a change
// of the key turns into a delete and a create of the same order id at one
// position, and whichever comes second is skipped as not newer: orders
// would be lost or merged. No message can be applied then, so this is a
// configuration error that stops the sink, not a dead letter. Only the
// key's column names are shown, never its values.
func (o *orderSchema) checkKey(key pipeline.Row) error {
	if len(key) == 1 && key[0].Name == o.idCol {
		return nil
	}
	names := make([]string, len(key))
	for i, c := range key {
		names[i] = c.Name
	}
	return &config.Error{Var: config.Prefix + "_ORDER_ID_COLUMN", Problem: fmt.Sprintf(
		"is %q, but the events of %s.%s are keyed by [%s]: it must be the table's primary key, alone, or a change of the key loses orders",
		o.idCol, o.schema, o.table, strings.Join(names, ","))}
}

// fatal reports whether err is a configuration problem that events
// revealed: retrying cannot help, so the sink stops with it.
func fatal(err error) bool {
	var cfgErr *config.Error
	return errors.As(err, &cfgErr)
}

// orderID reads the order id from the row, falling back to the key.
func (o *orderSchema) orderID(row, key pipeline.Row) (string, error) {
	raw, ok := row.Get(o.idCol)
	if !ok {
		raw, ok = key.Get(o.idCol)
	}
	if !ok {
		return "", permanentf("order id column %q is in neither the row nor the key", o.idCol)
	}
	return idText(o.idCol, raw)
}

func idText(col string, raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", permanentf("order id column %q is null", col)
	}
	if raw[0] == '{' || raw[0] == '[' {
		return "", permanentf("order id column %q is not a scalar: %.40s", col, raw)
	}
	return pipeline.ScalarText(raw), nil
}

// intColumn reads an integer column of the event's after image. keep is
// set when the column is an unchanged TOASTed value.
func (o *orderSchema) intColumn(ev *pipeline.Event, col string) (v *int64, keep bool, err error) {
	raw, ok := ev.After.Get(col)
	if !ok {
		if slices.Contains(ev.Unchanged, col) {
			return nil, true, nil
		}
		return nil, false, permanentf("column %q is missing from after", col)
	}
	n, null, err := parseInteger(raw)
	if err != nil {
		return nil, false, permanentf("column %q: %v", col, err)
	}
	if null {
		return nil, false, nil
	}
	return &n, false, nil
}

func (o *orderSchema) textColumn(ev *pipeline.Event, col string) (v *string, keep bool, err error) {
	raw, ok := ev.After.Get(col)
	if !ok {
		if slices.Contains(ev.Unchanged, col) {
			return nil, true, nil
		}
		return nil, false, permanentf("column %q is missing from after", col)
	}
	if isNull(raw) {
		return nil, false, nil
	}
	if raw[0] == '{' || raw[0] == '[' {
		return nil, false, permanentf("column %q is not a scalar: %.40s", col, raw)
	}
	s := pipeline.ScalarText(raw)
	return &s, false, nil
}

// apply returns the state after change c given the previous state prev
// (nil when the order is unknown).
func (c *orderChange) apply(prev *orderState) *orderState {
	next := &orderState{Pos: c.pos, Deleted: c.deleted}
	if c.deleted {
		// Keep the last known columns: they say which item the tombstone
		// belonged to, which helps an operator reading the projection.
		if prev != nil {
			next.Item, next.Quantity, next.Status = prev.Item, prev.Quantity, prev.Status
		}
		return next
	}
	next.Item, next.Quantity, next.Status = c.item, c.quantity, c.status
	if prev != nil {
		if c.keepItem {
			next.Item = prev.Item
		}
		if c.keepQty {
			next.Quantity = prev.Quantity
		}
		if c.keepStatus {
			next.Status = prev.Status
		}
	}
	return next
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// parseInteger reads a JSON number or a JSON string holding one, as an
// integer. A decimal with only zeros after the point ("3.00", what a
// numeric(10,2) column sends) is an integer too; "3.5" is not.
func parseInteger(raw json.RawMessage) (n int64, null bool, err error) {
	if isNull(raw) {
		return 0, true, nil
	}
	s := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, false, fmt.Errorf("bad JSON string %.40s", raw)
		}
		s = strings.TrimSpace(s)
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, false, nil
	}
	if whole, frac, ok := strings.Cut(s, "."); ok && frac != "" && strings.Trim(frac, "0") == "" {
		if n, err := strconv.ParseInt(whole, 10, 64); err == nil {
			return n, false, nil
		}
	}
	return 0, false, fmt.Errorf("not an integer: %.40s", raw)
}

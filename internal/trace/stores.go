package trace

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/verify"
	"github.com/cdcsync/cdcsync/pipeline"
	"github.com/cdcsync/cdcsync/sink"
)

// readStores reads what the sinks hold for the row: the inventory
// projection and item (for the orders table, with the inventory sink), the
// row cache (with the redis sink), the item's availability, and the
// applied-through positions.
func (t *tracer) readStores(ctx context.Context, r *Report) error {
	if t.cfg.RedisURL != "" && (t.cfg.Has(config.SinkRedis) || t.cfg.Has(config.SinkInventory)) {
		opts, err := redis.ParseURL(t.cfg.RedisURL)
		if err != nil {
			return &config.Error{Var: config.Prefix + "_REDIS_URL", Problem: "cannot be used: " + err.Error()}
		}
		t.rdb = redis.NewClient(opts)
	}
	if t.cfg.Has(config.SinkInventory) && t.schema+"."+t.table == t.cfg.OrdersTable {
		if err := t.readInventory(ctx, r); err != nil {
			return err
		}
	}
	if t.cfg.Has(config.SinkRedis) && t.rdb != nil {
		if err := t.readRowCache(ctx, r); err != nil {
			return err
		}
	}
	if t.rdb != nil {
		if err := t.readRedisApplied(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

func (t *tracer) readInventory(ctx context.Context, r *Report) error {
	var err error
	if t.inv, err = pgx.Connect(ctx, t.cfg.InventoryURL); err != nil {
		return fmt.Errorf("connect to the inventory store: %w", err)
	}
	idRaw, ok := t.keyMap[t.cfg.OrderIDColumn]
	if !ok {
		return fmt.Errorf("%w: the key has no %s (CDCSYNC_ORDER_ID_COLUMN)", ErrUsage, t.cfg.OrderIDColumn)
	}
	p := &Projection{}
	var epoch, commit, change int64
	err = t.inv.QueryRow(ctx, `SELECT item_id, quantity, status, deleted, epoch, commit_lsn, change_lsn
		FROM cdcsync_order_projection WHERE order_id = $1`, pipeline.ScalarText(idRaw)).
		Scan(&p.ItemID, &p.Quantity, &p.Status, &p.Deleted, &epoch, &commit, &change)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case isUndefinedTable(err):
		return fmt.Errorf("read the inventory projection: %w", verify.ErrNoInventory)
	case err != nil:
		return fmt.Errorf("read the inventory projection: %w", err)
	default:
		p.Exists = true
		p.Position = pipeline.Position{Epoch: uint32(epoch), Commit: pglogrepl.LSN(commit), Change: pglogrepl.LSN(change)}.String()
	}
	r.Projection = p
	r.orderColumns = map[string]string{}
	for name, col := range map[string]string{"item": t.cfg.ItemColumn, "quantity": t.cfg.QuantityColumn, "status": t.cfg.StatusColumn} {
		if v, ok := r.Source.Row[col]; ok {
			r.orderColumns[name] = v
		}
	}

	// The item: the order's item in the source, else the projection's.
	item, ok := int64Field(r.Source.Row, t.cfg.ItemColumn)
	if !ok && p.ItemID != nil {
		item, ok = *p.ItemID, true
	}
	if ok {
		it := &Item{ItemID: item}
		var version *int64
		err := t.inv.QueryRow(ctx, `SELECT i.on_hand, i.reserved, i.shipped, v.version
			FROM inventory_items i LEFT JOIN cdcsync_item_version v USING (item_id) WHERE i.item_id = $1`, item).
			Scan(&it.OnHand, &it.Reserved, &it.Shipped, &version)
		if isUndefinedTable(err) { // a store without availability versions
			err = t.inv.QueryRow(ctx, `SELECT on_hand, reserved, shipped FROM inventory_items WHERE item_id = $1`, item).
				Scan(&it.OnHand, &it.Reserved, &it.Shipped)
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read inventory item %d: %w", item, err)
		}
		it.Exists = err == nil
		if version != nil {
			it.Version = strconv.FormatInt(*version, 10)
		}
		if it.ExpectedReserved, it.ExpectedShipped, err = verify.ExpectedItem(ctx, t.src, t.cfg.Inventory, item); err != nil {
			return err
		}
		r.Item = it
		if t.rdb != nil {
			if err := t.readAvailability(ctx, r, it); err != nil {
				return err
			}
		}
	}

	var sinkName, lsn string
	err = t.inv.QueryRow(ctx, `SELECT sink, lsn::text FROM cdcsync_applied WHERE sink = 'inventory'`).Scan(&sinkName, &lsn)
	switch {
	case err == nil:
		r.Applied = append(r.Applied, Applied{Store: "inventory store", Sink: sinkName, LSN: lsn})
	case errors.Is(err, pgx.ErrNoRows), isUndefinedTable(err):
		// No applied-through position kept (yet).
	default:
		return fmt.Errorf("read cdcsync_applied: %w", err)
	}
	return nil
}

func (t *tracer) readAvailability(ctx context.Context, r *Report, it *Item) error {
	a := &Availability{Key: sink.AvailabilityKey(it.ItemID), Expected: strconv.FormatInt(it.OnHand-it.Reserved-it.Shipped, 10)}
	v, err := t.rdb.Get(ctx, a.Key).Result()
	switch {
	case err == nil:
		a.Value = &v
	case errors.Is(err, redis.Nil):
	default:
		return fmt.Errorf("read %s: %w", a.Key, err)
	}
	ver, err := t.rdb.HGet(ctx, sink.AvailabilityVersionKey, strconv.FormatInt(it.ItemID, 10)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read the availability version of item %d: %w", it.ItemID, err)
	}
	a.Version = ver
	r.Availability = a
	return nil
}

func (t *tracer) readRowCache(ctx context.Context, r *Report) error {
	rc := &RowCache{Key: t.cacheKey}
	got, err := t.rdb.HGetAll(ctx, t.cacheKey).Result()
	if err != nil {
		return fmt.Errorf("read %s: %w", t.cacheKey, err)
	}
	if len(got) > 0 {
		rc.Exists, rc.Row = true, got
	}
	versionKey := sink.VersionKey(t.schema, t.table, t.keyRow())
	ver, err := t.rdb.Get(ctx, versionKey).Result()
	switch {
	case err == nil:
		pos, err := sink.ParsePositionKey(ver)
		if err != nil {
			return fmt.Errorf("read %s: %w", versionKey, err)
		}
		rc.Position = pos.String()
	case errors.Is(err, redis.Nil):
	default:
		return fmt.Errorf("read %s: %w", versionKey, err)
	}
	r.RowCache = rc
	return nil
}

// readRedisApplied reads the cdcsync:applied:<sink> keys.
func (t *tracer) readRedisApplied(ctx context.Context, r *Report) error {
	for _, s := range []string{config.SinkRedis, config.SinkInventory} {
		if !t.cfg.Has(s) {
			continue
		}
		lsn, err := t.rdb.Get(ctx, "cdcsync:applied:"+s).Result()
		switch {
		case err == nil:
			r.Applied = append(r.Applied, Applied{Store: "redis", Sink: s, LSN: lsn})
		case errors.Is(err, redis.Nil):
		default:
			return fmt.Errorf("read cdcsync:applied:%s: %w", s, err)
		}
	}
	return nil
}

// keyRow is the row's key as a pipeline.Row, from the Kafka key.
func (t *tracer) keyRow() pipeline.Row {
	var row pipeline.Row
	if err := row.UnmarshalJSON(t.kafkaKey); err != nil {
		return nil
	}
	return row
}

func int64Field(row map[string]string, col string) (int64, bool) {
	v, ok := row[col]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

func isUndefinedTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedTable
}

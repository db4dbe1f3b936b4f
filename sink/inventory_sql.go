package sink

// The inventory store's tables. inventory_items is DESIGN.md's; the sink
// owns reserved and shipped and never writes on_hand (it inserts missing
// items with 0). The cdcsync_ tables are the sink's own bookkeeping:
//
//   - cdcsync_order_projection keeps, per order, the columns that decide its
//     contribution and the position of the change that set them. Deleted
//     orders stay as tombstones (deleted = true) so that a late older event
//     is recognised as old instead of resurrecting the order. Only a
//     truncate removes rows.
//   - cdcsync_sink_state keeps, per source table, the position of the last
//     applied truncate: a truncate arrives on one partition only, and every
//     event at or before it, on any partition, must be skipped.
//   - cdcsync_available_version numbers availability refreshes in the order
//     the item rows were written, so that Redis never takes an older value
//     over a newer one.
//
// Positions are two bigint columns (commit LSN, change LSN), compared as a
// row value.
var inventorySchema = []string{
	`CREATE TABLE IF NOT EXISTS inventory_items (
		item_id  bigint PRIMARY KEY,
		on_hand  bigint NOT NULL DEFAULT 0,
		reserved bigint NOT NULL DEFAULT 0,
		shipped  bigint NOT NULL DEFAULT 0)`,
	`CREATE TABLE IF NOT EXISTS cdcsync_order_projection (
		order_id   text PRIMARY KEY,
		item_id    bigint,
		quantity   bigint,
		status     text,
		deleted    boolean NOT NULL DEFAULT false,
		commit_lsn bigint NOT NULL,
		change_lsn bigint NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS cdcsync_sink_state (
		table_name          text PRIMARY KEY,
		truncate_commit_lsn bigint NOT NULL DEFAULT 0,
		truncate_change_lsn bigint NOT NULL DEFAULT 0)`,
	`CREATE SEQUENCE IF NOT EXISTS cdcsync_available_version`,
	// Read-your-writes: the sink's applied-through position (DESIGN.md)
	// and the watermark of each partition it is computed from
	// (applied_store.go).
	`CREATE TABLE IF NOT EXISTS cdcsync_applied (
		sink        text PRIMARY KEY,
		lsn         pg_lsn NOT NULL,
		updated_at  timestamptz NOT NULL,
		source_time timestamptz)`,
	`CREATE TABLE IF NOT EXISTS cdcsync_applied_partitions (
		sink        text NOT NULL,
		topic       text NOT NULL,
		partition   integer NOT NULL,
		partitions  integer NOT NULL,
		lsn         pg_lsn NOT NULL,
		source_time timestamptz NOT NULL,
		PRIMARY KEY (sink, topic, partition))`,
}

const (
	// The schema is created only when something is missing, so that a sink
	// whose role may use but not create tables starts against tables an
	// administrator created.
	sqlSchemaExists = `SELECT to_regclass('inventory_items') IS NOT NULL
		AND to_regclass('cdcsync_order_projection') IS NOT NULL
		AND to_regclass('cdcsync_sink_state') IS NOT NULL
		AND to_regclass('cdcsync_available_version') IS NOT NULL
		AND to_regclass('cdcsync_applied') IS NOT NULL
		AND to_regclass('cdcsync_applied_partitions') IS NOT NULL`

	// Serialises schema creation between sink processes starting together:
	// concurrent CREATE TABLE IF NOT EXISTS can fail on the catalog's
	// unique indexes.
	sqlSchemaLock = `SELECT pg_advisory_xact_lock(hashtext('cdcsync.inventory.schema'))`

	sqlEnsureState = `INSERT INTO cdcsync_sink_state (table_name) VALUES ($1) ON CONFLICT DO NOTHING`

	// Every batch transaction locks its table's state row first: shared for
	// ordinary batches, exclusive for a batch with a truncate. A truncate
	// thus never interleaves with a batch that read the old watermark, and
	// all transactions take locks in the same order (state row, projection
	// rows by order_id, item rows by item_id), so they cannot deadlock.
	sqlStateShare = `SELECT truncate_commit_lsn, truncate_change_lsn FROM cdcsync_sink_state
		WHERE table_name = $1 FOR SHARE`
	sqlStateExclusive = `SELECT truncate_commit_lsn, truncate_change_lsn FROM cdcsync_sink_state
		WHERE table_name = $1 FOR UPDATE`

	// Locks the projection rows of a batch's orders in order_id order,
	// inserting a placeholder (a tombstone at position zero, which any event
	// replaces) for orders not seen yet. Creating the missing rows, rather
	// than only locking existing ones (SELECT ... FOR UPDATE), matters when
	// two transactions meet on one new order (a primary-key change puts the
	// old id's delete on another partition): the second waits for the first
	// and then sees its row, instead of overwriting it unseen. ON CONFLICT
	// DO UPDATE locks the existing row even though WHERE false updates
	// nothing.
	sqlLockOrders = `INSERT INTO cdcsync_order_projection AS p (order_id, deleted, commit_lsn, change_lsn)
		SELECT id, true, 0, 0 FROM unnest($1::text[]) AS id ORDER BY id
		ON CONFLICT (order_id) DO UPDATE SET deleted = p.deleted WHERE false`

	sqlReadOrders = `SELECT order_id, item_id, quantity, status, deleted, commit_lsn, change_lsn
		FROM cdcsync_order_projection WHERE order_id = ANY($1)`

	sqlUpsertOrders = `INSERT INTO cdcsync_order_projection AS p
			(order_id, item_id, quantity, status, deleted, commit_lsn, change_lsn)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::boolean[], $6::bigint[], $7::bigint[])
		ON CONFLICT (order_id) DO UPDATE SET
			item_id = excluded.item_id, quantity = excluded.quantity, status = excluded.status,
			deleted = excluded.deleted, commit_lsn = excluded.commit_lsn, change_lsn = excluded.change_lsn`

	// A truncate releases what every order it covers contributed and drops
	// their projection rows (the watermark now covers them).
	sqlTruncateOrders = `WITH gone AS (
			DELETE FROM cdcsync_order_projection
			WHERE (commit_lsn, change_lsn) < ($1, $2)
			RETURNING item_id, quantity, status, deleted)
		SELECT item_id,
			coalesce(sum(quantity) FILTER (WHERE NOT deleted AND status = ANY($3)), 0)::bigint,
			coalesce(sum(quantity) FILTER (WHERE NOT deleted AND status = ANY($4)), 0)::bigint
		FROM gone WHERE item_id IS NOT NULL GROUP BY item_id`

	sqlSetTruncate = `UPDATE cdcsync_sink_state SET truncate_commit_lsn = $2, truncate_change_lsn = $3
		WHERE table_name = $1`

	sqlAllItems = `SELECT item_id FROM inventory_items`

	// Items are written in item_id order (deadlock-free between concurrent
	// batches); zero deltas are written too, so that their availability is
	// refreshed after a replay. The version is drawn while the row is
	// locked, so versions of one item follow its commit order.
	sqlUpsertItems = `INSERT INTO inventory_items AS i (item_id, reserved, shipped)
		SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS d(item_id, reserved, shipped)
		ORDER BY item_id
		ON CONFLICT (item_id) DO UPDATE SET
			reserved = i.reserved + excluded.reserved, shipped = i.shipped + excluded.shipped
		RETURNING item_id, on_hand - reserved - shipped, nextval('cdcsync_available_version')`
)

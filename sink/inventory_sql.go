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
//     over a newer one; cdcsync_item_version keeps each item's last number,
//     written in the transaction that changed the item. The sequence starts
//     at the creation time in microseconds, so that a store rebuilt later
//     numbers above what Redis holds from the old one (a restore from a
//     backup is repaired when Redis refuses a refresh: see
//     inventory.repair).
//   - cdcsync_availability_queue lists items whose availability must be
//     refreshed outside an order batch: on_hand changes by the warehouse
//     (a trigger, since the warehouse writes the column directly) and the
//     items a truncate changed. It is durable, so a refresh is never lost
//     to a sink restart; the sinks drain it in chunks (availabilityQueue).
//
// Positions are three bigint columns (source epoch, commit LSN, change LSN),
// compared as a row value. The epoch columns were added after the others:
// a store from before has them added with 0, the epoch of its positions.
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
	`ALTER TABLE cdcsync_order_projection ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0`,
	`CREATE TABLE IF NOT EXISTS cdcsync_sink_state (
		table_name          text PRIMARY KEY,
		truncate_commit_lsn bigint NOT NULL DEFAULT 0,
		truncate_change_lsn bigint NOT NULL DEFAULT 0)`,
	`ALTER TABLE cdcsync_sink_state ADD COLUMN IF NOT EXISTS truncate_epoch bigint NOT NULL DEFAULT 0`,
	`CREATE SEQUENCE IF NOT EXISTS cdcsync_available_version`,
	// When an order was deleted: its tombstone goes after the horizon
	// (tombstones.go).
	`ALTER TABLE cdcsync_order_projection ADD COLUMN IF NOT EXISTS deleted_at timestamptz`,
	`CREATE INDEX IF NOT EXISTS cdcsync_order_projection_deleted ON cdcsync_order_projection (deleted_at) WHERE deleted`,
	`CREATE TABLE IF NOT EXISTS cdcsync_item_version (
		item_id bigint PRIMARY KEY,
		version bigint NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS cdcsync_availability_queue (item_id bigint NOT NULL)`,
	// The trigger runs in the warehouse's transaction, with the privileges
	// of the function's owner (the sink's role), so the warehouse needs no
	// rights on the sink's tables. Statement-level with transition tables:
	// one insert per warehouse statement, however many rows it changed.
	// The version is drawn while the warehouse holds the item's row lock,
	// so it orders with the sink's own refreshes of the item.
	`CREATE OR REPLACE FUNCTION cdcsync_stock_changed() RETURNS trigger
		LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
	BEGIN
		IF TG_OP = 'UPDATE' THEN
			WITH changed AS (
				SELECT n.item_id FROM cdcsync_new n JOIN cdcsync_old o USING (item_id)
				WHERE n.on_hand IS DISTINCT FROM o.on_hand),
			bumped AS (
				INSERT INTO cdcsync_item_version AS v (item_id, version)
				SELECT item_id, nextval('cdcsync_available_version') FROM changed ORDER BY item_id
				ON CONFLICT (item_id) DO UPDATE SET version = excluded.version
				RETURNING item_id)
			INSERT INTO cdcsync_availability_queue (item_id) SELECT item_id FROM bumped;
		ELSE
			WITH bumped AS (
				INSERT INTO cdcsync_item_version AS v (item_id, version)
				SELECT item_id, nextval('cdcsync_available_version') FROM cdcsync_new
				WHERE on_hand <> 0 ORDER BY item_id
				ON CONFLICT (item_id) DO UPDATE SET version = excluded.version
				RETURNING item_id)
			INSERT INTO cdcsync_availability_queue (item_id) SELECT item_id FROM bumped;
		END IF;
		IF FOUND THEN
			PERFORM pg_notify('` + availabilityChannel + `', '');
		END IF;
		RETURN NULL;
	END $$`,
	`CREATE OR REPLACE TRIGGER cdcsync_stock_update AFTER UPDATE ON inventory_items
		REFERENCING OLD TABLE AS cdcsync_old NEW TABLE AS cdcsync_new
		FOR EACH STATEMENT EXECUTE FUNCTION cdcsync_stock_changed()`,
	`CREATE OR REPLACE TRIGGER cdcsync_stock_insert AFTER INSERT ON inventory_items
		REFERENCING NEW TABLE AS cdcsync_new
		FOR EACH STATEMENT EXECUTE FUNCTION cdcsync_stock_changed()`,
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
	// The source epoch of each (see Positions above): a new epoch is
	// later whatever its LSN.
	`ALTER TABLE cdcsync_applied ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0`,
	`ALTER TABLE cdcsync_applied_partitions ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0`,
}

// availabilityChannel is the NOTIFY channel that wakes the sinks when items
// were queued for an availability refresh.
const availabilityChannel = "cdcsync_availability"

const (
	// The schema is created only when something is missing, so that a sink
	// whose role may use but not create tables starts against tables an
	// administrator created.
	sqlSchemaExists = `SELECT to_regclass('inventory_items') IS NOT NULL
		AND to_regclass('cdcsync_order_projection') IS NOT NULL
		AND to_regclass('cdcsync_sink_state') IS NOT NULL
		AND (SELECT count(*) FROM pg_attribute WHERE attnum > 0 AND NOT attisdropped
			AND ((attrelid = to_regclass('cdcsync_order_projection') AND attname = 'epoch')
			OR (attrelid = to_regclass('cdcsync_sink_state') AND attname = 'truncate_epoch')
			OR (attrelid = to_regclass('cdcsync_applied') AND attname = 'epoch')
			OR (attrelid = to_regclass('cdcsync_applied_partitions') AND attname = 'epoch'))) = 4
		AND to_regclass('cdcsync_available_version') IS NOT NULL
		AND to_regclass('cdcsync_applied') IS NOT NULL
		AND to_regclass('cdcsync_applied_partitions') IS NOT NULL
		AND to_regclass('cdcsync_item_version') IS NOT NULL
		AND to_regclass('cdcsync_order_projection_deleted') IS NOT NULL
		AND to_regclass('cdcsync_availability_queue') IS NOT NULL
		AND (SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass('inventory_items')
			AND tgname IN ('cdcsync_stock_update', 'cdcsync_stock_insert')) = 2`

	// Which parts of the availability versioning exist before the schema is
	// created: a new sequence is started at the time in microseconds, a new
	// version table is filled for the items there are, and queued for one
	// refresh (stock set before the sink first ran).
	sqlVersioningExists = `SELECT to_regclass('cdcsync_available_version') IS NOT NULL,
		to_regclass('cdcsync_item_version') IS NOT NULL`
	sqlSeedVersions = `SELECT setval('cdcsync_available_version', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)`
	sqlFillVersions = `INSERT INTO cdcsync_item_version (item_id, version)
		SELECT item_id, nextval('cdcsync_available_version') FROM inventory_items ORDER BY item_id
		ON CONFLICT (item_id) DO NOTHING`
	sqlQueueAllItems = `INSERT INTO cdcsync_availability_queue (item_id) SELECT item_id FROM inventory_items`

	// Queues items for a refresh by the drain, in the transaction that
	// changed them, and wakes the sinks when it commits.
	sqlQueueItems = `INSERT INTO cdcsync_availability_queue (item_id) SELECT unnest($1::bigint[])`
	sqlNotify     = `SELECT pg_notify('` + availabilityChannel + `', '')`

	// Takes up to $1 queued entries (skipping those another sink is
	// draining) and reads their items' availability and version as
	// committed. The entries stay deleted only if the transaction commits,
	// after Redis took the values.
	sqlDrainQueue     = `WITH q AS (` + sqlTakeQueued + ` SKIP LOCKED) RETURNING item_id) ` + sqlReadQueued
	sqlDrainQueueWait = `WITH q AS (` + sqlTakeQueued + `) RETURNING item_id) ` + sqlReadQueued
	sqlTakeQueued     = `DELETE FROM cdcsync_availability_queue WHERE ctid IN (
		SELECT ctid FROM cdcsync_availability_queue LIMIT $1 FOR UPDATE`
	sqlReadQueued = `SELECT q.item_id, i.on_hand - i.reserved - i.shipped, v.version
		FROM q LEFT JOIN inventory_items i USING (item_id) LEFT JOIN cdcsync_item_version v USING (item_id)`

	// The items' availability and version as committed now.
	sqlCurrentAvailability = `SELECT i.item_id, i.on_hand - i.reserved - i.shipped, coalesce(v.version, 0)
		FROM inventory_items i LEFT JOIN cdcsync_item_version v USING (item_id)
		WHERE i.item_id = ANY($1)`

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
	sqlStateShare = `SELECT truncate_epoch, truncate_commit_lsn, truncate_change_lsn FROM cdcsync_sink_state
		WHERE table_name = $1 FOR SHARE`
	sqlStateExclusive = `SELECT truncate_epoch, truncate_commit_lsn, truncate_change_lsn FROM cdcsync_sink_state
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
	sqlLockOrders = `INSERT INTO cdcsync_order_projection AS p (order_id, deleted, epoch, commit_lsn, change_lsn)
		SELECT id, true, 0, 0, 0 FROM unnest($1::text[]) AS id ORDER BY id
		ON CONFLICT (order_id) DO UPDATE SET deleted = p.deleted WHERE false`

	sqlReadOrders = `SELECT order_id, item_id, quantity, status, deleted, epoch, commit_lsn, change_lsn
		FROM cdcsync_order_projection WHERE order_id = ANY($1)`

	sqlUpsertOrders = `INSERT INTO cdcsync_order_projection AS p
			(order_id, item_id, quantity, status, deleted, epoch, commit_lsn, change_lsn, deleted_at)
		SELECT u.*, CASE WHEN u.deleted THEN now() END
		FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::boolean[], $6::bigint[], $7::bigint[], $8::bigint[])
			AS u(order_id, item_id, quantity, status, deleted, epoch, commit_lsn, change_lsn)
		ON CONFLICT (order_id) DO UPDATE SET
			item_id = excluded.item_id, quantity = excluded.quantity, status = excluded.status,
			deleted = excluded.deleted, epoch = excluded.epoch,
			commit_lsn = excluded.commit_lsn, change_lsn = excluded.change_lsn,
			deleted_at = excluded.deleted_at`

	// Drops up to $2 tombstones of orders deleted longer than $1 ago, and
	// placeholders no event replaced (position zero: any event replaces
	// them, so they say nothing). The conditions are checked again on a
	// row a concurrent batch changed, so a re-created order stays.
	sqlSweepTombstones = `DELETE FROM cdcsync_order_projection WHERE ctid IN (
			SELECT ctid FROM cdcsync_order_projection
			WHERE deleted AND (deleted_at < now() - $1::interval OR commit_lsn = 0) LIMIT $2)
		AND deleted AND (deleted_at < now() - $1::interval OR commit_lsn = 0)`

	// A truncate releases what every order it covers contributed and drops
	// their projection rows (the watermark now covers them).
	sqlTruncateOrders = `WITH gone AS (
			DELETE FROM cdcsync_order_projection
			WHERE (epoch, commit_lsn, change_lsn) < ($5, $1, $2)
			RETURNING item_id, quantity, status, deleted)
		SELECT item_id,
			coalesce(sum(quantity) FILTER (WHERE NOT deleted AND status = ANY($3)), 0)::bigint,
			coalesce(sum(quantity) FILTER (WHERE NOT deleted AND status = ANY($4)), 0)::bigint
		FROM gone WHERE item_id IS NOT NULL GROUP BY item_id`

	sqlSetTruncate = `UPDATE cdcsync_sink_state SET truncate_commit_lsn = $2, truncate_change_lsn = $3, truncate_epoch = $4
		WHERE table_name = $1`

	// Items are written in item_id order (deadlock-free between concurrent
	// batches); zero deltas are written too, so that their availability is
	// refreshed after a replay. The version is drawn while the item row is
	// locked, so versions of one item follow its commit order, and kept in
	// cdcsync_item_version in the same transaction.
	sqlUpsertItems = `WITH d AS (
			INSERT INTO inventory_items AS i (item_id, reserved, shipped)
			SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS d(item_id, reserved, shipped)
			ORDER BY item_id
			ON CONFLICT (item_id) DO UPDATE SET
				reserved = i.reserved + excluded.reserved, shipped = i.shipped + excluded.shipped
			RETURNING item_id, on_hand - reserved - shipped AS available),
		v AS (
			INSERT INTO cdcsync_item_version AS v (item_id, version)
			SELECT item_id, nextval('cdcsync_available_version') FROM d ORDER BY item_id
			ON CONFLICT (item_id) DO UPDATE SET version = excluded.version
			RETURNING item_id, version)
		SELECT d.item_id, d.available, v.version FROM d JOIN v USING (item_id)`
)

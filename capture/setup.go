package capture

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Errors that no retry can fix: the operator must change the database or the
// configuration. Run returns them (wrapped with details) instead of retrying.
var (
	ErrWALLevel       = errors.New("wal_level is not logical")
	ErrNoReplication  = errors.New("role lacks the REPLICATION attribute")
	ErrTableMissing   = errors.New("captured table does not exist")
	ErrNoKey          = errors.New("captured table has no primary key or replica identity index")
	ErrSlotActive     = errors.New("replication slot is active in another process")
	ErrSlotWrongSetup = errors.New("replication slot exists with another plugin or database")
	ErrSlotBeforePub  = errors.New("replication slot is older than its publication")
)

// permanent reports whether err is one of the configuration errors above.
func permanent(err error) bool {
	for _, e := range []error{ErrWALLevel, ErrNoReplication, ErrTableMissing, ErrNoKey, ErrReplicaIdentity, ErrPublication, ErrSlotLost, ErrSlotWrongSetup, ErrSlotBeforePub} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// tableInfo is a captured table as the catalog describes it.
type tableInfo struct {
	Schema, Name string
	Key          []string // primary key (or replica identity index) columns in order
}

func (t tableInfo) ident() string  { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }
func (t tableInfo) String() string { return t.Schema + "." + t.Name }

// splitTable splits "schema.table"; a bare name means schema public.
func splitTable(s string) (schema, table string) {
	if schema, table, ok := strings.Cut(s, "."); ok {
		return schema, table
	}
	return "public", s
}

// checkSource verifies that the server and role can do logical replication
// and looks up each table's key columns.
func checkSource(ctx context.Context, conn *pgx.Conn, tables []string) ([]tableInfo, error) {
	var walLevel string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		return nil, fmt.Errorf("read wal_level: %w", err)
	}
	if walLevel != "logical" {
		return nil, fmt.Errorf("%w: it is %q; set wal_level = logical in postgresql.conf and restart Postgres", ErrWALLevel, walLevel)
	}
	var canReplicate bool
	var role string
	err := conn.QueryRow(ctx, `SELECT rolreplication OR rolsuper, rolname FROM pg_roles WHERE rolname = current_user`).Scan(&canReplicate, &role)
	if err != nil {
		return nil, fmt.Errorf("read role attributes: %w", err)
	}
	if !canReplicate {
		return nil, fmt.Errorf("%w: run ALTER ROLE %s WITH REPLICATION as a superuser", ErrNoReplication, pgx.Identifier{role}.Sanitize())
	}
	infos := make([]tableInfo, 0, len(tables))
	for _, name := range tables {
		schema, table := splitTable(name)
		info, err := lookupTable(ctx, conn, schema, table)
		if err != nil {
			return nil, err
		}
		infos = append(infos, info)
	}
	return infos, nil
}

func lookupTable(ctx context.Context, conn *pgx.Conn, schema, table string) (tableInfo, error) {
	info := tableInfo{Schema: schema, Name: table}
	var relid uint32
	var replident string
	err := conn.QueryRow(ctx, `
		SELECT c.oid, c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, schema, table).Scan(&relid, &replident)
	if errors.Is(err, pgx.ErrNoRows) {
		return info, fmt.Errorf("%w: %s (check CDCSYNC_TABLES)", ErrTableMissing, info)
	}
	if err != nil {
		return info, fmt.Errorf("look up table %s: %w", info, err)
	}
	if info.Key, err = identityKey(ctx, conn, info, relid, replident); err != nil {
		return info, err
	}
	return info, nil
}

// ensurePublication creates the publication for the tables, or adds tables
// missing from an existing one.
func ensurePublication(ctx context.Context, conn *pgx.Conn, name string, tables []tableInfo) error {
	var allTables bool
	err := conn.QueryRow(ctx, `SELECT puballtables FROM pg_publication WHERE pubname = $1`, name).Scan(&allTables)
	if errors.Is(err, pgx.ErrNoRows) {
		idents := make([]string, len(tables))
		for i, t := range tables {
			idents[i] = t.ident()
		}
		// Changes of a partitioned table's partitions are published as the
		// table itself, so they reach the table's topic like its snapshot.
		sql := "CREATE PUBLICATION " + pgx.Identifier{name}.Sanitize() + " FOR TABLE " + strings.Join(idents, ", ") +
			" WITH (publish_via_partition_root = true)"
		if _, err := conn.Exec(ctx, sql); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.DuplicateObject {
				return ensurePublication(ctx, conn, name, tables) // created concurrently
			}
			return fmt.Errorf("create publication %s: %w", name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read publication %s: %w", name, err)
	}
	if allTables {
		return nil
	}
	for _, t := range tables {
		var present bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)`,
			name, t.Schema, t.Name).Scan(&present)
		if err != nil {
			return fmt.Errorf("read publication %s: %w", name, err)
		}
		if present {
			continue
		}
		if _, err := conn.Exec(ctx, "ALTER PUBLICATION "+pgx.Identifier{name}.Sanitize()+" ADD TABLE "+t.ident()); err != nil {
			return fmt.Errorf("add %s to publication %s: %w", t, name, err)
		}
	}
	return nil
}

// publishedTables returns the "schema.table" names publication name
// publishes now (none when it does not exist).
func publishedTables(ctx context.Context, conn *pgx.Conn, name string) (map[string]bool, error) {
	rows, err := conn.Query(ctx, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1`, name)
	if err != nil {
		return nil, fmt.Errorf("read publication %s: %w", name, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read publication %s: %w", name, err)
	}
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out, nil
}

// slotInfo describes an existing replication slot.
type slotInfo struct {
	Exists         bool
	Active         bool
	ActivePID      int32
	Plugin         string
	Database       string
	ConfirmedFlush pglogrepl.LSN
}

func readSlot(ctx context.Context, conn *pgx.Conn, name string) (slotInfo, error) {
	var s slotInfo
	var pid *int32
	var plugin, database, confirmed *string
	err := conn.QueryRow(ctx, `
		SELECT active, active_pid, plugin, database, confirmed_flush_lsn::text
		FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&s.Active, &pid, &plugin, &database, &confirmed)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read slot %s: %w", name, err)
	}
	s.Exists = true
	if pid != nil {
		s.ActivePID = *pid
	}
	if plugin != nil {
		s.Plugin = *plugin
	}
	if database != nil {
		s.Database = *database
	}
	if confirmed != nil {
		if s.ConfirmedFlush, err = pglogrepl.ParseLSN(*confirmed); err != nil {
			return s, fmt.Errorf("read slot %s: %w", name, err)
		}
	}
	return s, nil
}

// stateStore keeps capture's own state in the order database: per slot,
// whether its initial snapshot (the backfills in snapshot_tables) is
// complete, and the slot's consistent point when capture created it.
type stateStore struct {
	schema string
}

func (s stateStore) table() string { return pgx.Identifier{s.schema, "capture_state"}.Sanitize() }

func (s stateStore) ensure(ctx context.Context, conn *pgx.Conn) error {
	return ensureStateTable(ctx, conn, s.schema, "capture_state", `(
			slot text PRIMARY KEY,
			snapshot_done boolean NOT NULL,
			consistent_lsn pg_lsn,
			source_epoch bigint NOT NULL DEFAULT 0,
			resnapshot_lsn pg_lsn,
			updated_at timestamptz NOT NULL DEFAULT now())`)
}

// ensureStateTable creates schema.table with the given column list when it
// is missing. It looks before it creates: CREATE ... IF NOT EXISTS still
// needs the CREATE privilege, and a least-privilege role whose state schema
// was created by an administrator should not need it.
func ensureStateTable(ctx context.Context, conn *pgx.Conn, schema, table, columns string) error {
	ident := pgx.Identifier{schema, table}.Sanitize()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", ident).Scan(&exists); err != nil {
		return fmt.Errorf("look up state table %s: %w", ident, err)
	}
	if exists {
		return nil
	}
	var schemaExists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema).Scan(&schemaExists); err != nil {
		return fmt.Errorf("look up state schema %s: %w", schema, err)
	}
	stmts := []string{"CREATE TABLE IF NOT EXISTS " + ident + " " + columns}
	if !schemaExists {
		stmts = append([]string{"CREATE SCHEMA IF NOT EXISTS " + pgx.Identifier{schema}.Sanitize()}, stmts...)
	}
	for _, sql := range stmts {
		if _, err := conn.Exec(ctx, sql); err != nil {
			if createdMeanwhile(err) {
				continue
			}
			return fmt.Errorf("create state table %s: %w", ident, err)
		}
	}
	return nil
}

// createdMeanwhile reports whether a CREATE ... IF NOT EXISTS failed
// because another session (a second capture, `cdcsync replay snapshot`)
// created the same object at the same moment: IF NOT EXISTS looks before
// the other commits, and the insert into the catalog then collides on its
// unique index, or on the table's row type or the relation itself.
func createdMeanwhile(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case pgerrcode.UniqueViolation, pgerrcode.DuplicateTable, pgerrcode.DuplicateObject, pgerrcode.DuplicateSchema:
		return true
	}
	return false
}

// snapshotState is a slot's capture_state row.
type snapshotState struct {
	exists bool
	done   bool // every initial backfill finished
}

func (s stateStore) get(ctx context.Context, conn *pgx.Conn, slot string) (snapshotState, error) {
	var st snapshotState
	err := conn.QueryRow(ctx, "SELECT snapshot_done FROM "+s.table()+" WHERE slot = $1", slot).Scan(&st.done)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read capture state: %w", err)
	}
	st.exists = true
	return st, nil
}

// setSnapshot records whether the slot's initial snapshot is complete.
func (s stateStore) setSnapshot(ctx context.Context, tx pgx.Tx, slot string, done bool) error {
	_, err := tx.Exec(ctx, "INSERT INTO "+s.table()+` (slot, snapshot_done) VALUES ($1, $2)
		ON CONFLICT (slot) DO UPDATE SET snapshot_done = EXCLUDED.snapshot_done, updated_at = now()`, slot, done)
	if err != nil {
		return fmt.Errorf("write capture state: %w", err)
	}
	return nil
}

// setConsistentLSN records where a slot capture just created starts.
func (s stateStore) setConsistentLSN(ctx context.Context, conn *pgx.Conn, slot string, lsn pglogrepl.LSN) error {
	_, err := conn.Exec(ctx, "INSERT INTO "+s.table()+` (slot, snapshot_done, consistent_lsn) VALUES ($1, true, $2::text::pg_lsn)
		ON CONFLICT (slot) DO UPDATE SET consistent_lsn = EXCLUDED.consistent_lsn, updated_at = now()`, slot, lsn.String())
	if err != nil {
		return fmt.Errorf("write capture state: %w", err)
	}
	return nil
}

// finishSnapshot marks the slot's initial snapshot complete once every
// backfill in snapshot_tables is done, and reports whether it did so now.
func (s stateStore) finishSnapshot(ctx context.Context, conn pgx.Tx, slot string) (bool, error) {
	registry := snapshotTables{schema: s.schema}
	backfills := backfillStore{schema: s.schema}
	tag, err := conn.Exec(ctx, "UPDATE "+s.table()+` SET snapshot_done = true, updated_at = now()
		WHERE slot = $1 AND NOT snapshot_done AND NOT EXISTS (
			SELECT 1 FROM `+registry.table()+` r JOIN `+backfills.table()+` b ON b.id = r.backfill_id
			WHERE r.slot = $1 AND b.status <> 'done')`, slot)
	if err != nil {
		return false, fmt.Errorf("write capture state: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

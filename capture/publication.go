package capture

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrPublication: an existing publication would not publish what capture
// needs; the error says which ALTER PUBLICATION fixes it.
var ErrPublication = errors.New("publication does not publish what capture needs")

// validatePublication checks an existing publication, which capture may not
// have created itself (CDCSYNC_PUBLICATION names one made by hand); a
// missing one passes, capture creates it right. Each setting
// below silently loses or misroutes changes, so capture refuses to start
// instead:
//   - publish without update, delete or truncate drops those changes;
//   - without publish_via_partition_root, changes of a partitioned table
//     arrive under its partitions' names, on no topic of the table, while
//     the snapshot reads the table itself;
//   - a row filter or a column list on a captured table filters the stream
//     but not the snapshot or backfills, so the two disagree (and a row
//     leaving the filter is never deleted downstream).
func validatePublication(ctx context.Context, conn *pgx.Conn, name string, tables []tableInfo) error {
	pub := pgx.Identifier{name}.Sanitize()
	var ins, upd, del, trunc, viaRoot bool
	err := conn.QueryRow(ctx, `SELECT pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication WHERE pubname = $1`,
		name).Scan(&ins, &upd, &del, &trunc, &viaRoot)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read publication %s: %w", name, err)
	}
	var missing []string
	for _, p := range []struct {
		on   bool
		what string
	}{{ins, "insert"}, {upd, "update"}, {del, "delete"}, {trunc, "truncate"}} {
		if !p.on {
			missing = append(missing, p.what)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: publication %s does not publish %s, which would be dropped; run ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate')",
			ErrPublication, name, strings.Join(missing, ", "), pub)
	}
	var serverVersion int
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&serverVersion); err != nil {
		return fmt.Errorf("read server version: %w", err)
	}
	for _, t := range tables {
		var partitioned bool
		err := conn.QueryRow(ctx, `SELECT c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2`, t.Schema, t.Name).Scan(&partitioned)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // checkSource found it; dropped since: set-up fails on it next
		}
		if err != nil {
			return fmt.Errorf("read publication %s: table %s: %w", name, t, err)
		}
		if partitioned && !viaRoot {
			return fmt.Errorf("%w: publication %s publishes partitioned table %s under its partitions' names, which reach no topic of the table; run ALTER PUBLICATION %s SET (publish_via_partition_root = true)",
				ErrPublication, name, t, pub)
		}
		if serverVersion < 150000 {
			continue // row filters and column lists came with Postgres 15
		}
		var filtered, columns bool
		err = conn.QueryRow(ctx, `SELECT r.prqual IS NOT NULL, r.prattrs IS NOT NULL
			FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
			JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE p.pubname = $1 AND n.nspname = $2 AND c.relname = $3`, name, t.Schema, t.Name).Scan(&filtered, &columns)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // published through FOR ALL TABLES or TABLES IN SCHEMA: no filter possible
		}
		if err != nil {
			return fmt.Errorf("read publication %s: table %s: %w", name, t, err)
		}
		var what string
		switch {
		case filtered && columns:
			what = "a row filter (WHERE) and a column list"
		case filtered:
			what = "a row filter (WHERE)"
		case columns:
			what = "a column list"
		default:
			continue
		}
		return fmt.Errorf("%w: publication %s has %s on %s, which the snapshot and backfills do not apply; publish the whole table: ALTER PUBLICATION %s DROP TABLE %s; ALTER PUBLICATION %s ADD TABLE %s",
			ErrPublication, name, what, t, pub, t.ident(), pub, t.ident())
	}
	return nil
}

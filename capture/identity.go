package capture

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ErrReplicaIdentity: a captured table's replica identity cannot key its
// updates and deletes (NOTHING, or DEFAULT without a primary key).
var ErrReplicaIdentity = errors.New("captured table's replica identity cannot key updates and deletes")

// identityKey returns the columns capture keys a table's events by: the
// columns the old tuple of its deletes carries. That is the primary key for
// REPLICA IDENTITY DEFAULT and FULL (FULL sends the whole row, of which the
// primary key identifies it), and the identity index's columns for USING
// INDEX, whatever the primary key: a delete carries nothing else, so keying
// by the primary key would give deletes a null key and a different key
// than the row's inserts. NOTHING has no old tuple at all and is refused.
// replident is pg_class.relreplident.
func identityKey(ctx context.Context, conn *pgx.Conn, info tableInfo, relid uint32, replident string) ([]string, error) {
	if replident == "n" {
		return nil, fmt.Errorf("%w: %s has REPLICA IDENTITY NOTHING, so its deletes carry no key; run ALTER TABLE %s REPLICA IDENTITY DEFAULT (with a primary key), USING INDEX <unique index> or FULL",
			ErrReplicaIdentity, info, info.ident())
	}
	// USING INDEX: the index flagged indisreplident; otherwise the primary key.
	rows, err := conn.Query(ctx, `
		SELECT a.attname FROM pg_index i
		CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = $1 AND CASE WHEN $2 = 'i' THEN i.indisreplident ELSE i.indisprimary END
		ORDER BY k.ord`, relid, replident)
	if err != nil {
		return nil, fmt.Errorf("look up key of %s: %w", info, err)
	}
	key, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("look up key of %s: %w", info, err)
	}
	if len(key) == 0 {
		// DEFAULT or FULL without a primary key: FULL could key deletes by
		// the whole row, but Kafka needs a key that stays the same for a row.
		return nil, fmt.Errorf("%w: %s; add a primary key or run ALTER TABLE %s REPLICA IDENTITY USING INDEX <unique index>",
			ErrNoKey, info, info.ident())
	}
	return key, nil
}

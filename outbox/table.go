package outbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// Execer runs one statement: *pgx.Conn, pgx.Tx and *pgxpool.Pool satisfy it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// CreateTable creates the Publisher's outbox table if it does not exist, with
// the columns Debezium's outbox event router reads:
//
//	id            uuid primary key     -- the event id (Kafka header "id")
//	aggregatetype text not null        -- topic suffix
//	aggregateid   text not null        -- Kafka key
//	type          text not null        -- event type (header "type")
//	payload       jsonb                -- Kafka value
//	headers       jsonb                -- extra Kafka headers, {"name":"value"}
//	created_at    timestamptz not null default now()
//
// The replica identity stays the default (the primary key): capture needs
// only inserts, and deletes carry just the id. The schema must exist.
// Capture must be told the table (CDCSYNC_OUTBOX_TABLE) and have it in its
// publication.
func (p *Publisher) CreateTable(ctx context.Context, db Execer) error {
	if p.table == nil {
		return errors.New("outbox: CreateTable needs table mode (WithTable)")
	}
	_, err := db.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+p.table.Sanitize()+` (
		id uuid PRIMARY KEY,
		aggregatetype text NOT NULL,
		aggregateid text NOT NULL,
		type text NOT NULL,
		payload jsonb,
		headers jsonb,
		created_at timestamptz NOT NULL DEFAULT now()
	)`)
	if err != nil {
		return fmt.Errorf("outbox: create table %s: %w", p.table.Sanitize(), err)
	}
	return nil
}

package demo

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Names of the demo's databases and topics. The order service's table is
// DESIGN.md's public.orders; the topic prefix is the default "cdc".
const (
	sourceDB    = "orders"
	inventoryDB = "inventory"
	topicPrefix = "cdc"
	// ordersTopic carries the orders table's changes; eventsTopic the
	// OrderCreated events the generator publishes through the outbox
	// (capture routes outbox events to <prefix>.events.<aggregate>).
	ordersTopic = topicPrefix + ".public.orders"
	eventsTopic = topicPrefix + ".events.order"
	partitions  = 4
)

// topics are created before capture and the sinks start: the development
// broker keeps only explicitly created topics across a restart, and the
// dead-letter topics should exist before anything needs them.
var topics = []struct {
	name       string
	partitions int32
}{
	{ordersTopic, partitions},
	{eventsTopic, partitions},
	{ordersTopic + ".dlq", 1},        // the sinks' dead letters (CDCSYNC_DLQ_SUFFIX)
	{topicPrefix + ".events.dlq", 1}, // capture's malformed outbox events
}

// ordersDDL is the order service's table.
const ordersDDL = `CREATE TABLE public.orders (
	id         bigserial PRIMARY KEY,
	item_id    bigint NOT NULL,
	quantity   int NOT NULL CHECK (quantity > 0),
	status     text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now())`

// inventoryDDL is DESIGN.md's inventory_items, as the sink creates it. The
// demo creates it first to stock the items: on_hand belongs to the
// warehouse, and the sink never writes it.
const inventoryDDL = `CREATE TABLE IF NOT EXISTS inventory_items (
	item_id  bigint PRIMARY KEY,
	on_hand  bigint NOT NULL DEFAULT 0,
	reserved bigint NOT NULL DEFAULT 0,
	shipped  bigint NOT NULL DEFAULT 0)`

// createSchema creates the two databases, the orders table and the
// stocked items 1..items (100 to 5,000 on hand each).
func createSchema(ctx context.Context, svc *demoServices, items int) error {
	for _, db := range []string{sourceDB, inventoryDB} {
		if err := svc.pg.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
			return fmt.Errorf("create database %s: %w", db, err)
		}
	}
	if err := svc.pg.Exec(ctx, sourceDB, ordersDDL); err != nil {
		return fmt.Errorf("create the orders table: %w", err)
	}
	conn, err := pgx.Connect(ctx, svc.pg.URL(inventoryDB))
	if err != nil {
		return fmt.Errorf("connect to the inventory store: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, inventoryDDL); err != nil {
		return fmt.Errorf("create inventory_items: %w", err)
	}
	_, err = conn.Exec(ctx, `INSERT INTO inventory_items (item_id, on_hand)
		SELECT i, 100 + floor(random() * 4901)::bigint FROM generate_series(1, $1::bigint) AS i`, items)
	if err != nil {
		return fmt.Errorf("stock the items: %w", err)
	}
	// The read-your-writes probe's own items, after the generator's.
	_, err = conn.Exec(ctx, `INSERT INTO inventory_items (item_id, on_hand)
		SELECT i, $3::bigint FROM generate_series($1::bigint, $2::bigint) AS i`, items+1, items+probeItems, probeOnHand)
	if err != nil {
		return fmt.Errorf("stock the probe's items: %w", err)
	}
	return nil
}

func createTopics(svc *demoServices) error {
	for _, t := range topics {
		if err := svc.kafka.CreateTopic(t.name, t.partitions); err != nil {
			return err
		}
	}
	return nil
}

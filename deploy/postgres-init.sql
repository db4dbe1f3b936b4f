-- Local set-up for docker-compose.yml, run once by the postgres image on an
-- empty data directory. Passwords here are for a local sandbox only.

-- The order service's table: cdcsync only reads it.
CREATE TABLE public.orders (
	id         bigint PRIMARY KEY,
	item_id    bigint NOT NULL,
	quantity   bigint NOT NULL CHECK (quantity > 0),
	status     text   NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);

-- Capture's role: replication, read access to the captured tables, and its
-- own schema for state. The publication is created here by the table owner,
-- so capture does not need to own the tables.
CREATE ROLE cdcsync LOGIN REPLICATION PASSWORD 'cdcsync';
GRANT SELECT ON public.orders TO cdcsync;
CREATE PUBLICATION cdcsync FOR TABLE public.orders;
CREATE SCHEMA cdcsync AUTHORIZATION cdcsync;
-- capture runs CREATE SCHEMA IF NOT EXISTS for its state schema, and
-- Postgres checks the database privilege before it looks for the schema.
GRANT CREATE ON DATABASE orders TO cdcsync;

-- The inventory store: a separate database owned by the sink's role; the
-- sink creates its tables there.
CREATE ROLE inventory LOGIN PASSWORD 'inventory';
CREATE DATABASE inventory OWNER inventory;

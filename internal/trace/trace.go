// Package trace is `cdcsync trace`: it follows one row of a captured table
// through the pipeline (DESIGN.md, "Read-your-writes"). It reads the row in
// the order database now, its records on Kafka (reading the key's
// partition directly, as the hash partitioner placed them), what the
// inventory projection, the inventory item, the Redis row cache and the
// availability cache hold for it and at which position, and gives a
// verdict: in sync, in flight (and how far behind), or drift (and what
// differs).
package trace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/capture"
	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/consistency"
	"github.com/cdcsync/cdcsync/internal/verify"
	"github.com/cdcsync/cdcsync/pipeline"
)

// Verdicts.
const (
	InSync   = "in sync"
	InFlight = "in flight"
	Drift    = "drift"
)

// Report is everything trace found about one row.
type Report struct {
	Table string          `json:"table"`
	Key   json.RawMessage `json:"key"`
	// SourceLSN is the order database's WAL position ("<epoch>@" first
	// in a source epoch above 0) when the row was
	// read.
	SourceLSN string `json:"source_lsn"`
	Source    Source `json:"source"`
	Kafka     Kafka  `json:"kafka"`
	// Projection and Item are the inventory sink's state (orders table
	// only, with the inventory sink); RowCache the redis sink's;
	// Availability the availability cache of the order's item.
	Projection   *Projection   `json:"projection,omitempty"`
	Item         *Item         `json:"item,omitempty"`
	RowCache     *RowCache     `json:"row_cache,omitempty"`
	Availability *Availability `json:"availability,omitempty"`
	// Applied are the sinks' applied-through positions where the stores
	// keep them (cdcsync_applied, cdcsync:applied:<sink>).
	Applied []Applied `json:"applied,omitempty"`
	Verdict Verdict   `json:"verdict"`
	// orderColumns are the order's item, quantity and status in the
	// source row (absent when NULL), for comparing with the projection.
	orderColumns map[string]string
}

// Source is the row in the order database now.
type Source struct {
	Exists bool              `json:"exists"`
	Row    map[string]string `json:"row,omitempty"` // non-NULL columns, rendered as the row cache holds them
}

// Kafka is the row's records on its topic's partition.
type Kafka struct {
	Topic     string   `json:"topic"`
	Partition int32    `json:"partition"`
	Records   []Record `json:"records"`
	// Scanned counts the partition's records read to find them.
	Scanned int64 `json:"scanned"`
}

// Record is one record of the row on Kafka.
type Record struct {
	Offset   int64     `json:"offset"`
	Position string    `json:"position,omitempty"` // commit LSN:change LSN; empty for a tombstone
	Op       string    `json:"op"`                 // c, u, d, r; "tombstone" for the null value after a delete
	Time     time.Time `json:"time"`               // the record's timestamp
	// CommitTime is when the change committed (source.ts_ms); zero for a
	// tombstone.
	CommitTime time.Time `json:"commit_time,omitzero"`
	// row is the after image rendered as the row cache would hold it (nil
	// for deletes and tombstones); unchanged names the TOASTed columns the
	// record left out.
	row       map[string]string
	unchanged []string
}

// Projection is the inventory sink's per-order row.
type Projection struct {
	Exists   bool    `json:"exists"`
	ItemID   *int64  `json:"item_id,omitempty"`
	Quantity *int64  `json:"quantity,omitempty"`
	Status   *string `json:"status,omitempty"`
	Deleted  bool    `json:"deleted"`
	Position string  `json:"position,omitempty"`
}

// Item is the inventory row of the order's item, next to what the orders
// say it should be.
type Item struct {
	ItemID           int64 `json:"item_id"`
	Exists           bool  `json:"exists"`
	OnHand           int64 `json:"on_hand"`
	Reserved         int64 `json:"reserved"`
	Shipped          int64 `json:"shipped"`
	ExpectedReserved int64 `json:"expected_reserved"`
	ExpectedShipped  int64 `json:"expected_shipped"`
	// Version is the availability version the sink wrote with the row
	// (cdcsync_item_version); empty when the store keeps none.
	Version string `json:"version,omitempty"`
}

// RowCache is the row's hash in Redis and its version.
type RowCache struct {
	Key      string            `json:"key"`
	Exists   bool              `json:"exists"`
	Row      map[string]string `json:"row,omitempty"`
	Position string            `json:"position,omitempty"` // of the last applied change; kept after a delete
}

// Availability is the availability cache of the order's item.
type Availability struct {
	Key      string  `json:"key"`
	Value    *string `json:"value"`
	Expected string  `json:"expected"` // on_hand - reserved - shipped of the inventory row
	Version  string  `json:"version,omitempty"`
}

// Applied is one sink's applied-through position.
type Applied struct {
	Store string `json:"store"` // "inventory store" or "redis"
	Sink  string `json:"sink"`
	LSN   string `json:"lsn"`
}

// Verdict sums the row up.
type Verdict struct {
	State string `json:"state"` // InSync, InFlight or Drift
	// Behind says how far the stores are behind (in flight).
	Behind string `json:"behind,omitempty"`
	// Details lists what differs and where.
	Details []string `json:"details,omitempty"`
}

// ErrUsage is returned (wrapped) for a table or key that cannot be traced.
var ErrUsage = errors.New("bad trace arguments")

// Run traces the row of table (schema.table) whose key is the JSON object
// key, with the stores and brokers of cfg.
func Run(ctx context.Context, cfg config.Verify, table, key string) (*Report, error) {
	schema, name, keyCols, err := parseArgs(table, key)
	if err != nil {
		return nil, err
	}
	t := &tracer{cfg: cfg, schema: schema, table: name}
	defer t.close()
	r := &Report{Table: table, Key: json.RawMessage(key)}
	if err := t.readSource(ctx, r, keyCols); err != nil {
		return nil, err
	}
	if err := t.readKafka(ctx, r); err != nil {
		return nil, err
	}
	if err := t.readStores(ctx, r); err != nil {
		return nil, err
	}
	r.Verdict = decide(r)
	return r, nil
}

// CheckArgs reports (as ErrUsage) a table that is not schema.table or a
// key that is not a JSON object.
func CheckArgs(table, key string) error {
	_, _, _, err := parseArgs(table, key)
	return err
}

func parseArgs(table, key string) (schema, name string, keyCols map[string]json.RawMessage, err error) {
	schema, name, ok := strings.Cut(table, ".")
	if !ok || schema == "" || name == "" {
		return "", "", nil, fmt.Errorf("%w: --table %q: want schema.table", ErrUsage, table)
	}
	if err := json.Unmarshal([]byte(key), &keyCols); err != nil || len(keyCols) == 0 {
		return "", "", nil, fmt.Errorf(`%w: --key %q: want a JSON object of the key columns, e.g. {"id":42}`, ErrUsage, key)
	}
	return schema, name, keyCols, nil
}

// tracer holds one trace's connections.
type tracer struct {
	cfg           config.Verify
	schema, table string
	src           *pgx.Conn
	inv           *pgx.Conn
	rdb           *redis.Client
	// key is the row's Kafka key and cache key as capture and the sink
	// build them.
	kafkaKey []byte
	cacheKey string
	keyMap   map[string]json.RawMessage
}

func (t *tracer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if t.src != nil {
		_ = t.src.Close(ctx)
	}
	if t.inv != nil {
		_ = t.inv.Close(ctx)
	}
	if t.rdb != nil {
		_ = t.rdb.Close()
	}
}

// readSource reads the row in the order database with capture's session
// settings, so that its values render as capture encodes them.
func (t *tracer) readSource(ctx context.Context, r *Report, key map[string]json.RawMessage) error {
	pcfg, err := pgx.ParseConfig(t.cfg.SourceURL)
	if err != nil {
		return &config.Error{Var: config.Prefix + "_SOURCE_URL", Problem: "is not a usable postgres connection string"}
	}
	for k, v := range capture.SessionParams() {
		pcfg.RuntimeParams[k] = v
	}
	if t.src, err = pgx.ConnectConfig(ctx, pcfg); err != nil {
		return fmt.Errorf("connect to the order database: %w", err)
	}
	keyCols, row, err := verify.ReadRow(ctx, t.src, t.schema, t.table, key)
	if errors.Is(err, verify.ErrKeyColumns) || errors.Is(err, verify.ErrTableMissing) {
		return fmt.Errorf("%w: %s: %w", ErrUsage, r.Table, err)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", r.Table, err)
	}
	var lsn string
	if err := t.src.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		return fmt.Errorf("read the order database's WAL position: %w", err)
	}
	// With the source epoch a change committed now is captured in, so
	// that an applied position of the old primary (higher LSNs) does not
	// count as past it after a failover. Unreadable capture state: epoch
	// 0, as before epochs.
	epoch, err := consistency.SourceEpoch(ctx, t.src, consistency.WithSlot(t.cfg.Slot), consistency.WithStateSchema(t.cfg.StateSchema))
	if err != nil {
		epoch = 0
	}
	pos, err := pipeline.ParseEpochLSN(lsn)
	if err != nil {
		return fmt.Errorf("read the order database's WAL position: %w", err)
	}
	pos.Epoch = epoch
	r.SourceLSN = pos.String()
	t.keyMap = key
	if row != nil {
		r.Source = Source{Exists: true, Row: row.Map()}
		t.kafkaKey = row.Key.AppendJSON(nil)
		t.cacheKey = row.CacheKey
		return nil
	}
	// Deleted (or never there): build the key from the argument, in key
	// column order, as capture would.
	t.kafkaKey, t.cacheKey = keyFromArgument(t.schema, t.table, keyCols, key)
	return nil
}

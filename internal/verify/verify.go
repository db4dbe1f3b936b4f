// Package verify compares the order database with what the sinks derived
// from it (DESIGN.md, "Inventory store" and "Redis caches"):
//
//   - inventory_items: per item, reserved = Σ quantity of its orders in a
//     reserved status and shipped = Σ quantity of its orders in a shipped
//     status, computed in SQL from the orders table;
//   - the availability cache: inventory:available:<item> = on_hand −
//     reserved − shipped of the item's inventory row;
//   - the row cache: every row of every cached table has a hash
//     cdc:<schema>.<table>:<pk> holding its non-NULL columns, rendered as
//     the redis sink renders them, and no hash exists for a row that does
//     not.
//
// The stores are read one after the other, not at one instant: run it when
// the pipeline has caught up (status.Collector.WaitCaughtUp), or expect
// changes in flight to show as drift.
package verify

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/capture"
	"github.com/cdcsync/cdcsync/config"
)

// Names of the checks in a Report.
const (
	CheckInventory    = "inventory_items"
	CheckAvailability = "availability"
	CheckRowCache     = "row_cache"
)

// Problems a Drift reports.
const (
	// Differs: the key exists on both sides with different values.
	Differs = "differs"
	// Missing: the sink should have written the key but it is absent.
	Missing = "missing"
	// Unexpected: the key exists although nothing in the order database
	// accounts for it.
	Unexpected = "unexpected"
)

// Report is the outcome of one verification.
type Report struct {
	// Drifted is the number of drifted items and keys over all checks.
	Drifted int64   `json:"drifted"`
	Checks  []Check `json:"checks"`
	// Cut is the LSN of the consistent cut compared at (see cut.go); empty
	// when the stores were compared as they were, one after the other,
	// and NoCut then says why.
	Cut   string `json:"cut,omitempty"`
	NoCut string `json:"no_cut,omitempty"`
}

// Check is the outcome of one comparison.
type Check struct {
	Name  string `json:"name"`
	Table string `json:"table,omitempty"` // the source table of a row cache check
	// Compared counts the items or rows looked at; Drifted those that do
	// not match. Drifts lists the first of them (at most
	// CDCSYNC_VERIFY_MAX_REPORT), in key order.
	Compared int64   `json:"compared"`
	Drifted  int64   `json:"drifted"`
	Drifts   []Drift `json:"drifts"`
	// AfterCut counts the items and keys that differ but were changed
	// after the cut: changes in flight, not drift.
	AfterCut int64 `json:"changed_after_cut,omitempty"`
}

// Drift is one item or key that does not match.
type Drift struct {
	// Key is the item id (inventory_items) or the Redis key.
	Key     string `json:"key"`
	Problem string `json:"problem"` // Differs, Missing or Unexpected
	// Fields are the values that differ; for a missing or unexpected
	// Redis hash they are left out.
	Fields []Field `json:"fields,omitempty"`
}

// Field is one value that differs. A nil Expected means the field should
// be absent, a nil Actual that it is.
type Field struct {
	Name     string  `json:"field"`
	Expected *string `json:"expected"`
	Actual   *string `json:"actual"`
}

// Verifier holds the connections a verification needs; Run may be called
// repeatedly (the demo does).
type Verifier struct {
	cfg config.Verify
	src *pgxpool.Pool
	inv *pgxpool.Pool         // nil without the inventory sink
	rdb redis.UniversalClient // nil without Redis
}

// New prepares a verifier for cfg, which must be valid (config.Load
// validates it). Connections are opened on first use.
func New(ctx context.Context, cfg config.Verify) (*Verifier, error) {
	v := &Verifier{cfg: cfg}
	pcfg, err := pgxpool.ParseConfig(cfg.SourceURL)
	if err != nil {
		return nil, &config.Error{Var: config.Prefix + "_SOURCE_URL", Problem: "is not a usable postgres connection string"}
	}
	// Capture's session settings, under which the text form of every
	// value is what capture encoded (see capture.SessionParams).
	for k, val := range capture.SessionParams() {
		pcfg.ConnConfig.RuntimeParams[k] = val
	}
	pcfg.MaxConns = 4
	if v.src, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return nil, fmt.Errorf("source database: %w", err)
	}
	if cfg.Has(config.SinkInventory) {
		icfg, err := pgxpool.ParseConfig(cfg.InventoryURL)
		if err != nil {
			v.Close()
			return nil, &config.Error{Var: config.Prefix + "_INVENTORY_URL", Problem: "is not a usable postgres connection string"}
		}
		icfg.MaxConns = 2
		if v.inv, err = pgxpool.NewWithConfig(ctx, icfg); err != nil {
			v.Close()
			return nil, fmt.Errorf("inventory store: %w", err)
		}
	}
	availability := cfg.Has(config.SinkInventory) && cfg.AvailabilityCache != "off"
	if cfg.RedisURL != "" && (cfg.Has(config.SinkRedis) || availability) {
		opts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			v.Close()
			return nil, &config.Error{Var: config.Prefix + "_REDIS_URL", Problem: config.RedisURLProblem(cfg.RedisURL)}
		}
		v.rdb = redis.NewClient(opts)
	}
	return v, nil
}

// Close releases the connections.
func (v *Verifier) Close() {
	if v.src != nil {
		v.src.Close()
	}
	if v.inv != nil {
		v.inv.Close()
	}
	if v.rdb != nil {
		_ = v.rdb.Close()
	}
}

// Run compares the stores and reports every drift. An error means a store
// could not be read; a report with drift is not an error.
func (v *Verifier) Run(ctx context.Context) (*Report, error) {
	r := &Report{}
	var c *cut
	if v.cfg.CutWait > 0 {
		kept, why, err := v.positionsKept(ctx)
		if err != nil {
			return nil, err
		}
		if kept {
			if c, err = v.takeCut(ctx); err != nil {
				return nil, err
			}
			defer c.close()
			if err := v.waitApplied(ctx, c.pos); err != nil {
				return nil, err
			}
			r.Cut = c.pos.String()
		} else {
			r.NoCut = why
		}
	} else {
		r.NoCut = "CDCSYNC_VERIFY_CUT_WAIT=0"
	}
	// The order database is read on the cut's snapshot, or on one
	// connection as it is.
	var src *pgx.Conn
	if c != nil {
		src = c.conn.Conn()
	} else {
		conn, err := v.src.Acquire(ctx)
		if err != nil {
			return nil, fmt.Errorf("connect to the order database: %w", err)
		}
		defer conn.Release()
		src = conn.Conn()
	}
	if v.cfg.Has(config.SinkInventory) {
		checks, err := v.checkInventory(ctx, src, c)
		if err != nil {
			return nil, err
		}
		r.Checks = append(r.Checks, checks...)
	}
	if v.cfg.Has(config.SinkRedis) {
		for _, table := range v.cfg.Tables {
			ch, err := v.checkRowCache(ctx, src, table, c)
			if err != nil {
				return nil, err
			}
			r.Checks = append(r.Checks, ch)
		}
	}
	for _, ch := range r.Checks {
		r.Drifted += ch.Drifted
	}
	return r, nil
}

// availabilityChecked reports whether the availability cache is compared.
func (v *Verifier) availabilityChecked() bool {
	return v.rdb != nil && v.cfg.AvailabilityCache != "off"
}

// ErrNoInventory is returned (wrapped) when the inventory store has no
// inventory_items table: the inventory sink has never started there.
var ErrNoInventory = errors.New("inventory store has no inventory_items table (has the inventory sink run against CDCSYNC_INVENTORY_URL?)")

// collector gathers one check's drifts, keeping the first max.
type collector struct {
	check *Check
	max   int
}

func (c *collector) add(d Drift) {
	c.check.Drifted++
	if len(c.check.Drifts) < c.max {
		c.check.Drifts = append(c.check.Drifts, d)
	}
}

func ptr(s string) *string { return &s }

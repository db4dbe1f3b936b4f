package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
)

// redisDB hands each test its own Redis database, so that tests sharing
// the server do not see each other's keys (the availability keys have no
// table in their name).
var redisDB atomic.Int32

// stores is one test's order database, inventory store and Redis
// database, with a verify configuration pointing at them.
type stores struct {
	e      *testenv.Env
	src    string // database names
	inv    string
	rdb    *redis.Client
	cfg    config.Verify
	t      *testing.T
	ctx    context.Context
	closed bool
}

func newStores(t *testing.T) *stores {
	t.Helper()
	e := testenv.RequireEnv(t, env)
	db := int(redisDB.Add(1)) % 16
	s := &stores{e: e, src: e.PG.CreateDB(t), inv: e.PG.CreateDB(t), t: t, ctx: context.Background()}
	redisURL := "redis://" + e.Redis.Addr() + "/" + strconv.Itoa(db)
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	s.rdb = redis.NewClient(opts)
	if err := s.rdb.FlushDB(s.ctx).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.rdb.FlushDB(context.Background()).Err(); _ = s.rdb.Close() })
	if err := config.Defaults(&s.cfg); err != nil {
		t.Fatal(err)
	}
	s.cfg.SourceURL = e.PG.URL(s.src)
	s.cfg.InventoryURL = e.PG.URL(s.inv)
	s.cfg.RedisURL = redisURL
	if err := s.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *stores) exec(db string, sql ...string) {
	s.t.Helper()
	if err := s.e.PG.Exec(s.ctx, db, sql...); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stores) redis(args ...any) {
	s.t.Helper()
	if err := s.rdb.Do(s.ctx, args...).Err(); err != nil {
		s.t.Fatalf("redis %v: %v", args, err)
	}
}

func (s *stores) verify() *Report {
	s.t.Helper()
	v, err := New(s.ctx, s.cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	defer v.Close()
	r, err := v.Run(s.ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	return r
}

// consistent writes orders and, by hand, the inventory rows and Redis keys
// the sinks would have written for them.
func consistent(t *testing.T) *stores {
	s := newStores(t)
	s.exec(s.src,
		`CREATE TABLE orders (id bigint PRIMARY KEY, item_id bigint, quantity int, status text, note text)`,
		`INSERT INTO orders VALUES
			(1, 10, 2, 'created', 'gift'), (2, 10, 3, 'paid', NULL), (3, 10, 1, 'shipped', NULL),
			(4, 20, 5, 'cancelled', NULL), (5, 30, 4, 'shipped', 'a "quoted" note'),
			(6, NULL, 1, 'created', NULL)`)
	s.exec(s.inv,
		`CREATE TABLE inventory_items (item_id bigint PRIMARY KEY, on_hand bigint NOT NULL DEFAULT 0,
			reserved bigint NOT NULL DEFAULT 0, shipped bigint NOT NULL DEFAULT 0)`,
		// 40 is stocked but never ordered: the sink never wrote its
		// availability.
		`INSERT INTO inventory_items VALUES (10, 100, 5, 1), (20, 50, 0, 0), (30, 10, 0, 4), (40, 7, 0, 0)`)
	s.redis("SET", "inventory:available:10", "94")
	s.redis("SET", "inventory:available:20", "50")
	s.redis("SET", "inventory:available:30", "6")
	s.redis("HSET", "cdc:public.orders:1", "id", "1", "item_id", "10", "quantity", "2", "status", "created", "note", "gift")
	s.redis("HSET", "cdc:public.orders:2", "id", "2", "item_id", "10", "quantity", "3", "status", "paid")
	s.redis("HSET", "cdc:public.orders:3", "id", "3", "item_id", "10", "quantity", "1", "status", "shipped")
	s.redis("HSET", "cdc:public.orders:4", "id", "4", "item_id", "20", "quantity", "5", "status", "cancelled")
	s.redis("HSET", "cdc:public.orders:5", "id", "5", "item_id", "30", "quantity", "4", "status", "shipped", "note", `a "quoted" note`)
	s.redis("HSET", "cdc:public.orders:6", "id", "6", "quantity", "1", "status", "created")
	// The sinks' bookkeeping: every cached row and availability value has
	// a version; keys of other tables are not drift.
	for id := 1; id <= 6; id++ {
		s.redis("SET", "cdcver:public.orders:"+strconv.Itoa(id), "000000000000001000000000000000"+fmt.Sprintf("%02x", id))
	}
	s.redis("HSET", "cdcsync:available:version", "10", "3", "20", "4", "30", "5")
	s.redis("HSET", "cdc:public.orders_archive:1", "id", "1")
	return s
}

func TestNoDrift(t *testing.T) {
	s := consistent(t)
	r := s.verify()
	if r.Drifted != 0 {
		t.Fatalf("drift in consistent stores: %+v", r)
	}
	want := map[string]int64{CheckInventory: 4, CheckAvailability: 4, CheckAvailabilityVersions: 3, CheckRowCache: 6}
	if len(r.Checks) != 4 {
		t.Fatalf("checks: %+v", r.Checks)
	}
	for _, c := range r.Checks {
		if c.Compared != want[c.Name] || c.Drifted != 0 {
			t.Errorf("%s: compared %d (want %d), drifted %d", c.Label(), c.Compared, want[c.Name], c.Drifted)
		}
	}
	var buf bytes.Buffer
	if err := WriteText(&buf, r); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(buf.String(), "\nno drift\n") || !strings.Contains(buf.String(), "row_cache public.orders") {
		t.Errorf("text:\n%s", buf.String())
	}
}

func TestDriftIsFoundAndNamed(t *testing.T) {
	s := consistent(t)
	s.exec(s.inv,
		`UPDATE inventory_items SET reserved = 4 WHERE item_id = 10`, // wrong reserved
		`DELETE FROM inventory_items WHERE item_id = 30`,             // missing row (ships 4)
		`INSERT INTO inventory_items VALUES (50, 0, 2, 0)`)           // counts no order accounts for
	s.redis("SET", "inventory:available:10", "94")              // stale: the row now says 95
	s.redis("DEL", "inventory:available:20")                    // missing
	s.redis("SET", "inventory:available:999", "5")              // no such item
	s.redis("HSET", "cdc:public.orders:2", "status", "created") // stale hash
	s.redis("HSET", "cdc:public.orders:3", "color", "red")      // a field the row lacks
	s.redis("HDEL", "cdc:public.orders:1", "note")              // a column it lacks
	s.redis("DEL", "cdc:public.orders:4")                       // deleted hash of a live row
	s.redis("HSET", "cdc:public.orders:99", "id", "99")         // hash of no row
	s.redis("SET", "cdc:public.orders:5", "x")                  // wrong type

	r := s.verify()
	got := map[string][]string{}
	for _, c := range r.Checks {
		for _, d := range c.Drifts {
			got[c.Name] = append(got[c.Name], d.Describe(c.Name))
		}
		if int64(len(c.Drifts)) != c.Drifted {
			t.Errorf("%s: drifted %d, listed %d", c.Name, c.Drifted, len(c.Drifts))
		}
	}
	want := map[string][]string{
		CheckInventory: {
			`item 10: differs: reserved expected "5", actual "4"`,
			`item 30: missing: reserved expected "0", actual (absent); shipped expected "4", actual (absent)`,
			`item 50: unexpected: reserved expected "0", actual "2"`,
		},
		CheckAvailability: {
			// 30 has no inventory row any more: its key is unexpected,
			// and 50 (stocked by no order) may go without one.
			`inventory:available:10: differs: value expected "95", actual "94"`,
			`inventory:available:20: missing: value expected "50", actual (absent)`,
			`inventory:available:30: unexpected: value expected (absent), actual "6"`,
			`inventory:available:999: unexpected: value expected (absent), actual "5"`,
		},
		CheckRowCache: {
			`cdc:public.orders:1: differs: note expected "gift", actual (absent)`,
			`cdc:public.orders:2: differs: status expected "paid", actual "created"`,
			`cdc:public.orders:3: differs: color expected (absent), actual "red"`,
			`cdc:public.orders:4: missing`,
			`cdc:public.orders:5: differs: (type) expected "hash", actual "WRONGTYPE Operation against a key holding the wrong kind of value"`,
			`cdc:public.orders:99: unexpected`,
		},
	}
	for check, lines := range want {
		if strings.Join(got[check], "\n") != strings.Join(lines, "\n") {
			t.Errorf("%s:\n got\n  %s\n want\n  %s", check, strings.Join(got[check], "\n  "), strings.Join(lines, "\n  "))
		}
	}
	if r.Drifted != 13 {
		t.Errorf("drifted %d, want 13", r.Drifted)
	}

	var buf bytes.Buffer
	if err := WriteText(&buf, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "drift: 13 items or keys differ") || !strings.Contains(buf.String(), "item 10: differs") {
		t.Errorf("text:\n%s", buf.String())
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `{"key":"10","problem":"differs","fields":[{"field":"reserved","expected":"5","actual":"4"}]}`) {
		t.Errorf("JSON: %s", js)
	}
}

func TestMaxReportKeepsCounts(t *testing.T) {
	s := consistent(t)
	s.cfg.MaxReport = 2
	for i := 100; i < 110; i++ {
		s.redis("HSET", "cdc:public.orders:"+strconv.Itoa(i), "id", strconv.Itoa(i))
	}
	r := s.verify()
	c := r.Checks[3]
	if c.Name != CheckRowCache || c.Drifted != 10 || len(c.Drifts) != 2 || c.Drifts[0].Key != "cdc:public.orders:100" {
		t.Errorf("row cache check: %+v", c)
	}
	var buf bytes.Buffer
	if err := WriteText(&buf, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "10 drifted (first 2 shown)") {
		t.Errorf("text:\n%s", buf.String())
	}
}

func TestOnlySelectedSinks(t *testing.T) {
	s := consistent(t)
	s.redis("HSET", "cdc:public.orders:2", "status", "created")
	s.cfg.Sinks = []string{"inventory"}
	if r := s.verify(); r.Drifted != 0 || len(r.Checks) != 3 {
		t.Errorf("inventory only: %+v", r)
	}
	s.cfg.Sinks, s.cfg.InventoryURL = []string{"redis"}, ""
	if r := s.verify(); r.Drifted != 1 || len(r.Checks) != 1 || r.Checks[0].Name != CheckRowCache {
		t.Errorf("redis only: %+v", r)
	}
	s.cfg.Sinks, s.cfg.RedisURL, s.cfg.InventoryURL = []string{"inventory"}, "", s.e.PG.URL(s.inv)
	if r := s.verify(); r.Drifted != 0 || len(r.Checks) != 1 || r.Checks[0].Name != CheckInventory {
		t.Errorf("inventory without Redis: %+v", r)
	}
}

func TestConfiguredColumnsAndStatuses(t *testing.T) {
	s := newStores(t)
	s.exec(s.src,
		`CREATE SCHEMA sales`,
		`CREATE TYPE sales.state AS ENUM ('new', 'done', 'void')`,
		`CREATE TABLE sales."Order" ("Order Id" text PRIMARY KEY, sku int, qty numeric(10,2), "State" sales.state)`,
		`INSERT INTO sales."Order" VALUES ('a', 1, 2.00, 'new'), ('b', 1, 3, 'done'), ('c', 2, 1, 'void')`)
	s.exec(s.inv,
		`CREATE TABLE inventory_items (item_id bigint PRIMARY KEY, on_hand bigint NOT NULL DEFAULT 0,
			reserved bigint NOT NULL DEFAULT 0, shipped bigint NOT NULL DEFAULT 0)`,
		`INSERT INTO inventory_items VALUES (1, 0, 2, 3), (2, 0, 0, 0)`)
	s.cfg.Sinks = []string{"inventory"}
	s.cfg.RedisURL = ""
	s.cfg.OrdersTable, s.cfg.OrderIDColumn, s.cfg.ItemColumn = "sales.Order", "Order Id", "sku"
	s.cfg.QuantityColumn, s.cfg.StatusColumn = "qty", "State"
	s.cfg.ReservedStatuses, s.cfg.ShippedStatuses = []string{"new"}, []string{"done"}
	if r := s.verify(); r.Drifted != 0 || r.Checks[0].Compared != 2 {
		t.Errorf("%+v", r)
	}
}

func TestErrors(t *testing.T) {
	s := newStores(t)
	run := func() error {
		v, err := New(s.ctx, s.cfg)
		if err != nil {
			return err
		}
		defer v.Close()
		_, err = v.Run(s.ctx)
		return err
	}
	// No orders table.
	if err := run(); err == nil || !strings.Contains(err.Error(), "sum orders of public.orders") {
		t.Errorf("no orders table: %v", err)
	}
	s.exec(s.src, `CREATE TABLE orders (id bigint PRIMARY KEY, item_id bigint, quantity int, status text)`)
	if err := run(); !errors.Is(err, ErrNoInventory) {
		t.Errorf("no inventory_items: %v", err)
	}
	s.cfg.Sinks = []string{"redis"}
	s.cfg.Tables = []string{"public.nothing"}
	if err := run(); !errors.Is(err, ErrTableMissing) {
		t.Errorf("missing cached table: %v", err)
	}
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s.cfg.SourceURL = "postgres://postgres@127.0.0.1:" + strconv.Itoa(port) + "/x?sslmode=disable&connect_timeout=2"
	if err := run(); err == nil || !strings.Contains(err.Error(), "connect") {
		t.Errorf("unreachable database: %v", err)
	}
}

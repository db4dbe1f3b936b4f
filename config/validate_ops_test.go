package config

import (
	"testing"
	"time"
)

// Validation of the operator commands' configurations: status, verify and
// demo.

type opsCase struct {
	label  string
	spec   string // "status", "verify" or "demo"
	modify func(*Status, *Verify, *Demo)
	name   string
	want   string
}

func validOps(t *testing.T) (Status, Verify, Demo) {
	t.Helper()
	var s Status
	isolateEnv(t, &s, map[string]string{"CDCSYNC_SOURCE_URL": "postgres://cdc:hunter2@db.example/orders"})
	if err := Load(&s); err != nil {
		t.Fatal(err)
	}
	var v Verify
	isolateEnv(t, &v, map[string]string{
		"CDCSYNC_SOURCE_URL":    "postgres://cdc:hunter2@db.example/orders",
		"CDCSYNC_INVENTORY_URL": "postgres://inv:hunter2@inv.example/inventory",
	})
	if err := Load(&v); err != nil {
		t.Fatal(err)
	}
	var d Demo
	isolateEnv(t, &d, nil)
	if err := Load(&d); err != nil {
		t.Fatal(err)
	}
	return s, v, d
}

func opsCases() []opsCase {
	return []opsCase{
		{"status source", "status", func(s *Status, _ *Verify, _ *Demo) { s.SourceURL = "mysql://x:hunter2@db/orders" }, "CDCSYNC_SOURCE_URL", "postgres://"},
		{"status slot", "status", func(s *Status, _ *Verify, _ *Demo) { s.Slot = "Slot" }, "CDCSYNC_SLOT", "a-z, 0-9 and _"},
		{"status tables", "status", func(s *Status, _ *Verify, _ *Demo) { s.Tables = []string{"orders"} }, "CDCSYNC_TABLES", "schema.table"},
		{"status orders table", "status", func(s *Status, _ *Verify, _ *Demo) { s.OrdersTable = "orders" }, "CDCSYNC_ORDERS_TABLE", "schema.table"},
		{"status topic prefix", "status", func(s *Status, _ *Verify, _ *Demo) { s.TopicPrefix = "a b" }, "CDCSYNC_TOPIC_PREFIX", "a-z A-Z 0-9"},
		{"status group prefix", "status", func(s *Status, _ *Verify, _ *Demo) { s.GroupPrefix = "" }, "CDCSYNC_GROUP_PREFIX", "a-z A-Z 0-9"},
		{"status sinks", "status", func(s *Status, _ *Verify, _ *Demo) { s.Sinks = []string{"mongo"} }, "CDCSYNC_SINKS", `unknown sink "mongo"`},
		{"status kafka", "status", func(s *Status, _ *Verify, _ *Demo) { s.Kafka.Brokers = []string{"kafka"} }, "CDCSYNC_KAFKA_BROKERS", "not host:port"},

		{"verify source", "verify", func(_ *Status, v *Verify, _ *Demo) { v.SourceURL = "orders" }, "CDCSYNC_SOURCE_URL", "postgres:// URL"},
		{"verify sinks", "verify", func(_ *Status, v *Verify, _ *Demo) { v.Sinks = nil }, "CDCSYNC_SINKS", "must not be empty"},
		{"verify inventory url", "verify", func(_ *Status, v *Verify, _ *Demo) { v.InventoryURL = "" }, "CDCSYNC_INVENTORY_URL", "required when CDCSYNC_SINKS includes inventory"},
		{"verify redis url", "verify", func(_ *Status, v *Verify, _ *Demo) { v.RedisURL = "http://:hunter2@cache" }, "CDCSYNC_REDIS_URL", `got scheme "http"`},
		{"verify redis empty", "verify", func(_ *Status, v *Verify, _ *Demo) { v.RedisURL = "" }, "CDCSYNC_REDIS_URL", "required when CDCSYNC_SINKS includes redis"},
		{"verify cut wait", "verify", func(_ *Status, v *Verify, _ *Demo) { v.CutWait = -time.Second }, "CDCSYNC_VERIFY_CUT_WAIT", "negative"},
		{"verify availability cache", "verify", func(_ *Status, v *Verify, _ *Demo) { v.AvailabilityCache = "0" }, "CDCSYNC_AVAILABILITY_CACHE", `must be "on" or "off"`},
		{"verify tables", "verify", func(_ *Status, v *Verify, _ *Demo) { v.Tables = []string{"a.b.c"} }, "CDCSYNC_TABLES", "schema.table"},
		{"verify slot", "verify", func(_ *Status, v *Verify, _ *Demo) { v.Slot = "" }, "CDCSYNC_SLOT", "1 to 63"},
		{"verify topic prefix", "verify", func(_ *Status, v *Verify, _ *Demo) { v.TopicPrefix = "x/y" }, "CDCSYNC_TOPIC_PREFIX", "a-z A-Z 0-9"},
		{"verify group prefix", "verify", func(_ *Status, v *Verify, _ *Demo) { v.GroupPrefix = "g g" }, "CDCSYNC_GROUP_PREFIX", "a-z A-Z 0-9"},
		{"verify max report", "verify", func(_ *Status, v *Verify, _ *Demo) { v.MaxReport = 0 }, "CDCSYNC_VERIFY_MAX_REPORT", "positive"},
		{"verify orders table", "verify", func(_ *Status, v *Verify, _ *Demo) { v.OrdersTable = "orders" }, "CDCSYNC_ORDERS_TABLE", "schema.table"},
		{"verify id column", "verify", func(_ *Status, v *Verify, _ *Demo) { v.OrderIDColumn = "" }, "CDCSYNC_ORDER_ID_COLUMN", "must not be empty"},
		{"verify item column", "verify", func(_ *Status, v *Verify, _ *Demo) { v.ItemColumn = "" }, "CDCSYNC_ORDER_ITEM_COLUMN", "must not be empty"},
		{"verify quantity column", "verify", func(_ *Status, v *Verify, _ *Demo) { v.QuantityColumn = "" }, "CDCSYNC_ORDER_QUANTITY_COLUMN", "must not be empty"},
		{"verify status column", "verify", func(_ *Status, v *Verify, _ *Demo) { v.StatusColumn = "" }, "CDCSYNC_ORDER_STATUS_COLUMN", "must not be empty"},
		{"verify reserved", "verify", func(_ *Status, v *Verify, _ *Demo) { v.ReservedStatuses = []string{"paid", "paid"} }, "CDCSYNC_RESERVED_STATUSES", "twice"},
		{"verify shipped", "verify", func(_ *Status, v *Verify, _ *Demo) { v.ShippedStatuses = []string{"created"} }, "CDCSYNC_SHIPPED_STATUSES", "also in CDCSYNC_RESERVED_STATUSES"},
		{"verify kafka version", "verify", func(_ *Status, v *Verify, _ *Demo) { v.Kafka.Version = "x" }, "CDCSYNC_KAFKA_VERSION", "Kafka version"},

		{"demo duration", "demo", func(_ *Status, _ *Verify, d *Demo) { d.Duration = -time.Second }, "CDCSYNC_DEMO_DURATION", "negative"},
		{"demo rate", "demo", func(_ *Status, _ *Verify, d *Demo) { d.Rate = 0 }, "CDCSYNC_DEMO_RATE", "positive"},
		{"demo rate high", "demo", func(_ *Status, _ *Verify, d *Demo) { d.Rate = 1000000 }, "CDCSYNC_DEMO_RATE", "at most 100000"},
		{"demo items", "demo", func(_ *Status, _ *Verify, d *Demo) { d.Items = -1 }, "CDCSYNC_DEMO_ITEMS", "positive"},
		{"demo items high", "demo", func(_ *Status, _ *Verify, d *Demo) { d.Items = 20000000 }, "CDCSYNC_DEMO_ITEMS", "at most 10000000"},
		{"demo log", "demo", func(_ *Status, _ *Verify, d *Demo) { d.Log.Level = "chatty" }, "CDCSYNC_LOG_LEVEL", `got "chatty"`},
	}
}

func TestOpsValidate(t *testing.T) {
	for _, tc := range opsCases() {
		s, v, d := validOps(t)
		tc.modify(&s, &v, &d)
		var err error
		switch tc.spec {
		case "status":
			err = s.Validate()
		case "verify":
			err = v.Validate()
		case "demo":
			err = d.Validate()
		}
		checkErr(t, tc.label, err, tc.name, tc.want)
	}
}

func TestOpsValidateAccepts(t *testing.T) {
	s, v, d := validOps(t)
	if err := s.Validate(); err != nil {
		t.Errorf("status defaults: %v", err)
	}
	if err := v.Validate(); err != nil {
		t.Errorf("verify defaults: %v", err)
	}
	if err := d.Validate(); err != nil {
		t.Errorf("demo defaults: %v", err)
	}
	// Only the redis sink: no inventory URL needed.
	v.Sinks, v.InventoryURL = []string{"redis"}, ""
	if err := v.Validate(); err != nil {
		t.Errorf("verify redis only: %v", err)
	}
	// Only the inventory sink, no Redis: the availability cache is skipped.
	_, v, _ = validOps(t)
	v.Sinks, v.RedisURL = []string{"inventory"}, ""
	if err := v.Validate(); err != nil {
		t.Errorf("verify inventory without redis: %v", err)
	}
	d.Duration = 0
	if err := d.Validate(); err != nil {
		t.Errorf("demo until Ctrl-C: %v", err)
	}
}

func TestVerifyStatusConfig(t *testing.T) {
	_, v, _ := validOps(t)
	v.Slot, v.TopicPrefix, v.GroupPrefix, v.OrdersTable = "s1", "p1", "g1", "sales.orders"
	s := v.StatusConfig()
	if s.SourceURL != v.SourceURL || s.Slot != "s1" || s.TopicPrefix != "p1" || s.GroupPrefix != "g1" ||
		s.OrdersTable != "sales.orders" || len(s.Sinks) != 2 || s.Kafka.ClientID != v.Kafka.ClientID {
		t.Errorf("StatusConfig = %+v", s)
	}
	if err := s.Validate(); err != nil {
		t.Errorf("StatusConfig of a valid verify configuration: %v", err)
	}
}

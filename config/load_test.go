package config

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// The variable names are a contract (DESIGN.md); this pins the nesting
// rules that decide them.
func TestVarNamesFollowDesign(t *testing.T) {
	names := func(spec any) []string {
		var out []string
		for _, v := range Vars(spec) {
			out = append(out, v.Name)
		}
		return out
	}
	capture := names(&Capture{})
	for _, want := range []string{"CDCSYNC_SOURCE_URL", "CDCSYNC_TABLES", "CDCSYNC_SLOT", "CDCSYNC_PUBLICATION",
		"CDCSYNC_SNAPSHOT", "CDCSYNC_KAFKA_BROKERS", "CDCSYNC_TOPIC_PREFIX", "CDCSYNC_HTTP_ADDR",
		"CDCSYNC_KAFKA_SASL_PASSWORD", "CDCSYNC_LOG_LEVEL"} {
		if !slices.Contains(capture, want) {
			t.Errorf("capture does not read %s; it reads %v", want, capture)
		}
	}
	sink := names(&Sink{})
	for _, want := range []string{"CDCSYNC_SINKS", "CDCSYNC_INVENTORY_URL", "CDCSYNC_REDIS_URL",
		"CDCSYNC_KAFKA_BROKERS", "CDCSYNC_HTTP_ADDR", "CDCSYNC_ORDERS_TABLE", "CDCSYNC_RESERVED_STATUSES"} {
		if !slices.Contains(sink, want) {
			t.Errorf("sink does not read %s; it reads %v", want, sink)
		}
	}
}

// Vars must agree with what envconfig itself reads, or --help and the
// README would document variables that do nothing.
func TestVarsMatchEnvconfig(t *testing.T) {
	for _, spec := range []any{&Capture{}, &Sink{}, &DevBroker{}, &Status{}, &Verify{}, &Demo{}} {
		var buf bytes.Buffer
		if err := envconfig.Usagef(Prefix, spec, &buf, "{{range .}}{{usage_key .}}\n{{end}}"); err != nil {
			t.Fatal(err)
		}
		var ours []string
		for _, v := range Vars(spec) {
			ours = append(ours, v.Name)
		}
		var theirs []string
		for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			// envconfig also lists the struct fields themselves
			// (CDCSYNC_KAFKA for the embedded Kafka); those are not
			// variables.
			if !isStructKey(l) {
				theirs = append(theirs, l)
			}
		}
		if !slices.Equal(ours, theirs) {
			t.Errorf("%T:\nours     %v\nenvconfig %v", spec, ours, theirs)
		}
	}
}

func isStructKey(k string) bool {
	switch k {
	case "CDCSYNC_KAFKA", "CDCSYNC_HTTP", "CDCSYNC_LOG", "CDCSYNC_INVENTORY":
		return true
	}
	return false
}

func TestLoadDefaults(t *testing.T) {
	var c Capture
	isolateEnv(t, &c, map[string]string{"CDCSYNC_SOURCE_URL": "postgres://cdc@db.example:5432/orders"})
	if err := Load(&c); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Kafka.Brokers, []string{"localhost:9092"}) || c.HTTP.Addr != ":8080" ||
		c.Log.Level != "info" || c.HeartbeatInterval != 10*time.Second || c.Slot != "cdcsync" ||
		!slices.Equal(c.Tables, []string{"public.orders"}) {
		t.Errorf("defaults not applied: %+v", c)
	}
	// Exactly-once is the default (issue 12); at-least-once stays a choice.
	if c.Delivery != "exactly-once" || c.TransactionTimeout != 15*time.Minute {
		t.Errorf("delivery %q, transaction timeout %v: want exactly-once, 15m by default", c.Delivery, c.TransactionTimeout)
	}
	var alo Capture
	isolateEnv(t, &alo, map[string]string{"CDCSYNC_SOURCE_URL": "postgres://cdc@db.example:5432/orders", "CDCSYNC_DELIVERY": "at-least-once"})
	if err := Load(&alo); err != nil || alo.Delivery != "at-least-once" {
		t.Errorf("CDCSYNC_DELIVERY=at-least-once: %q, %v", alo.Delivery, err)
	}

	var s Sink
	isolateEnv(t, &s, map[string]string{"CDCSYNC_INVENTORY_URL": "postgres://inv@inv.example/inventory"})
	if err := Load(&s); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Sinks, []string{"inventory", "redis"}) || s.RedisURL != "redis://localhost:6379/0" ||
		s.Inventory.OrdersTable != "public.orders" || !slices.Equal(s.Inventory.ReservedStatuses, []string{"created", "paid"}) {
		t.Errorf("defaults not applied: %+v", s)
	}
}

func TestLoadReadsNestedVariables(t *testing.T) {
	var c Capture
	isolateEnv(t, &c, map[string]string{
		"CDCSYNC_SOURCE_URL":    "postgres://cdc@db/orders",
		"CDCSYNC_KAFKA_BROKERS": "k1:9092,k2:9093",
		"CDCSYNC_HTTP_ADDR":     "127.0.0.1:9100",
		"CDCSYNC_LOG_FORMAT":    "json",
	})
	if err := Load(&c); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Kafka.Brokers, []string{"k1:9092", "k2:9093"}) || c.HTTP.Addr != "127.0.0.1:9100" || c.Log.Format != "json" {
		t.Errorf("nested variables not read: %+v", c)
	}
}

func TestLoadErrorsNameTheVariable(t *testing.T) {
	const src = "postgres://cdc:hunter2@db/orders"
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "CDCSYNC_SOURCE_URL: required but not set"},
		{map[string]string{"CDCSYNC_SOURCE_URL": "  "}, "CDCSYNC_SOURCE_URL: required but not set"},
		{map[string]string{"CDCSYNC_SOURCE_URL": src, "CDCSYNC_SNAPSHOT": "sometimes"},
			`CDCSYNC_SNAPSHOT: must be one of "initial", "never", "when_needed", got "sometimes"`},
		{map[string]string{"CDCSYNC_SOURCE_URL": src, "CDCSYNC_HEARTBEAT_INTERVAL": "10"},
			`CDCSYNC_HEARTBEAT_INTERVAL: must be a duration such as 500ms, 10s or 2m, got "10"`},
		{map[string]string{"CDCSYNC_SOURCE_URL": src, "CDCSYNC_MAX_IN_FLIGHT": "lots"},
			`CDCSYNC_MAX_IN_FLIGHT: must be an integer, got "lots"`},
		{map[string]string{"CDCSYNC_SOURCE_URL": src, "CDCSYNC_TOPIC_REPLICATION_FACTOR": "40000"},
			`CDCSYNC_TOPIC_REPLICATION_FACTOR: out of range for int16, got "40000"`},
		{map[string]string{"CDCSYNC_SOURCE_URL": src, "CDCSYNC_KAFKA_TLS": "yes please"},
			`CDCSYNC_KAFKA_TLS: must be true or false, got "yes please"`},
		{map[string]string{"CDCSYNC_SOURCE_URL": src, "CDCSYNC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "CDCSYNC_KAFKA_SASL_USER": "cdc"},
			`CDCSYNC_KAFKA_SASL_PASSWORD: required with CDCSYNC_KAFKA_SASL_MECHANISM=SCRAM-SHA-256, but not set`},
	}
	for _, tc := range cases {
		var c Capture
		isolateEnv(t, &c, tc.env)
		err := Load(&c)
		var ce *Error
		if !errors.As(err, &ce) {
			t.Errorf("%v: got %v, want *Error %q", tc.env, err, tc.want)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("%v:\n got %q\nwant %q", tc.env, err.Error(), tc.want)
		}
	}
}

// envconfig falls back to the unprefixed name; the required check must
// agree with it rather than report a variable missing that envconfig
// would have found.
func TestLoadRequiredHonoursEnvconfigFallback(t *testing.T) {
	var c Capture
	isolateEnv(t, &c, map[string]string{"SOURCE_URL": "postgres://cdc@db/orders"})
	if err := Load(&c); err != nil {
		t.Fatal(err)
	}
	if c.SourceURL != "postgres://cdc@db/orders" {
		t.Errorf("SourceURL = %q", c.SourceURL)
	}
}

func TestUnknown(t *testing.T) {
	got := Unknown(&Capture{}, []string{"CDCSYNC_SLOT=x", "CDCSYNC_SNAPSHOTS=never", "PATH=/bin", "CDCSYNC_SINKS=redis"})
	if !slices.Equal(got, []string{"CDCSYNC_SINKS", "CDCSYNC_SNAPSHOTS"}) {
		t.Errorf("Unknown = %v", got)
	}
}

// Under the debezium encoding the table topics carry only Debezium's
// records: watermarks are off unless asked for.
func TestDebeziumEncodingTurnsWatermarksOffByDefault(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want time.Duration
	}{
		{map[string]string{}, 10 * time.Millisecond},
		{map[string]string{"CDCSYNC_ENCODING": "debezium"}, 0},
		{map[string]string{"CDCSYNC_ENCODING": "debezium", "CDCSYNC_WATERMARK_INTERVAL": "50ms"}, 50 * time.Millisecond},
		{map[string]string{"CDCSYNC_ENCODING": "cdcsync", "CDCSYNC_WATERMARK_INTERVAL": "0"}, 0},
	} {
		var c Capture
		tc.env["CDCSYNC_SOURCE_URL"] = "postgres://cdc@db/orders"
		isolateEnv(t, &c, tc.env)
		if err := Load(&c); err != nil {
			t.Fatal(err)
		}
		if c.WatermarkInterval != tc.want {
			t.Errorf("%v: watermark interval %v, want %v", tc.env, c.WatermarkInterval, tc.want)
		}
	}
}

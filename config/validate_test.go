package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func validCapture(t *testing.T) Capture {
	t.Helper()
	var c Capture
	isolateEnv(t, &c, map[string]string{"CDCSYNC_SOURCE_URL": "postgres://cdc:hunter2@db.example:5432/orders?sslmode=disable"})
	if err := Load(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

func validSink(t *testing.T) Sink {
	t.Helper()
	var s Sink
	isolateEnv(t, &s, map[string]string{"CDCSYNC_INVENTORY_URL": "postgres://inv:hunter2@inv.example/inventory"})
	if err := Load(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// checkErr asserts err is one *Error for variable name whose problem
// contains want, on one line, without the test password.
func checkErr(t *testing.T, label string, err error, name, want string) {
	t.Helper()
	var ce *Error
	if !errors.As(err, &ce) {
		t.Errorf("%s: got %v, want an error about %s", label, err, name)
		return
	}
	if ce.Var != name || !strings.Contains(ce.Problem, want) {
		t.Errorf("%s: got %q, want %s: ...%s...", label, err.Error(), name, want)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("%s: message has more than one line: %q", label, err.Error())
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("%s: message leaks the password: %q", label, err.Error())
	}
}

type captureCase struct {
	label  string
	modify func(*Capture)
	name   string
	want   string
}

func captureCases(t *testing.T) []captureCase {
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, []byte("not checked here"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []captureCase{
		{"mysql url", func(c *Capture) { c.SourceURL = "mysql://cdc:hunter2@db/orders" }, "CDCSYNC_SOURCE_URL", `must be a postgres:// or postgresql:// URL, got scheme "mysql"`},
		{"bare word", func(c *Capture) { c.SourceURL = "orders" }, "CDCSYNC_SOURCE_URL", "must be a postgres:// URL"},
		{"unescaped #", func(c *Capture) { c.SourceURL = "postgres://cdc:hun#ter2@db/orders" }, "CDCSYNC_SOURCE_URL", "percent-encode"},
		{"bad port", func(c *Capture) { c.SourceURL = "postgres://cdc:hunter2@db:99999/orders" }, "CDCSYNC_SOURCE_URL", "not a usable postgres connection string"},
		{"bad sslmode", func(c *Capture) { c.SourceURL = "postgres://cdc:hunter2@db/orders?sslmode=sometimes" }, "CDCSYNC_SOURCE_URL", "sslmode"},
		{"dsn bad sslmode", func(c *Capture) { c.SourceURL = "host=db password=hunter2 sslmode=sometimes" }, "CDCSYNC_SOURCE_URL", "sslmode"},
		{"table without schema", func(c *Capture) { c.Tables = []string{"orders"} }, "CDCSYNC_TABLES", `entry "orders" must be schema.table`},
		{"three parts", func(c *Capture) { c.Tables = []string{"db.public.orders"} }, "CDCSYNC_TABLES", "must be schema.table"},
		{"stray comma", func(c *Capture) { c.Tables = []string{"public.orders", ""} }, "CDCSYNC_TABLES", "empty entry"},
		{"spaces", func(c *Capture) { c.Tables = []string{"public.orders", " public.items"} }, "CDCSYNC_TABLES", "surrounding spaces"},
		{"duplicate", func(c *Capture) { c.Tables = []string{"public.orders", "public.orders"} }, "CDCSYNC_TABLES", "twice"},
		{"no tables", func(c *Capture) { c.Tables = nil }, "CDCSYNC_TABLES", "must not be empty"},
		{"slot upper case", func(c *Capture) { c.Slot = "CDC" }, "CDCSYNC_SLOT", "a-z, 0-9 and _"},
		{"slot dash", func(c *Capture) { c.Slot = "cdc-sync" }, "CDCSYNC_SLOT", "a-z, 0-9 and _"},
		{"slot too long", func(c *Capture) { c.Slot = strings.Repeat("s", 64) }, "CDCSYNC_SLOT", "1 to 63"},
		{"publication", func(c *Capture) { c.Publication = "pub lic" }, "CDCSYNC_PUBLICATION", "a-z, 0-9 and _"},
		{"slot busy", func(c *Capture) { c.SlotBusy = "steal" }, "CDCSYNC_SLOT_BUSY", `must be "wait" or "fail", got "steal"`},
		{"snapshot", func(c *Capture) { c.Snapshot = "sometimes" }, "CDCSYNC_SNAPSHOT", `must be one of "initial", "never", "when_needed", got "sometimes"`},
		{"chunk", func(c *Capture) { c.SnapshotChunkSize = 0 }, "CDCSYNC_SNAPSHOT_CHUNK_SIZE", "positive"},
		{"chunk bytes", func(c *Capture) { c.SnapshotMaxBytes = 0 }, "CDCSYNC_SNAPSHOT_MAX_CHUNK_BYTES", "positive"},
		{"state schema", func(c *Capture) { c.StateSchema = "" }, "CDCSYNC_STATE_SCHEMA", "Postgres name"},
		{"topic prefix", func(c *Capture) { c.TopicPrefix = "cdc/x" }, "CDCSYNC_TOPIC_PREFIX", "a-z A-Z 0-9"},
		{"outbox table", func(c *Capture) { c.OutboxTable = "outbox" }, "CDCSYNC_OUTBOX_TABLE", "schema.table"},
		{"outbox topic prefix", func(c *Capture) { c.OutboxTopicPrefix = "events/x" }, "CDCSYNC_OUTBOX_TOPIC_PREFIX", "a-z A-Z 0-9"},
		{"partitions", func(c *Capture) { c.TopicPartitions = 0 }, "CDCSYNC_TOPIC_PARTITIONS", "positive"},
		{"cleanup policy", func(c *Capture) { c.TopicCleanupPolicy = "compact,delete" }, "CDCSYNC_TOPIC_CLEANUP_POLICY", `must be "compact" or "delete"`},
		{"replication", func(c *Capture) { c.TopicReplication = 0 }, "CDCSYNC_TOPIC_REPLICATION_FACTOR", "-1"},
		{"heartbeat", func(c *Capture) { c.HeartbeatInterval = -time.Second }, "CDCSYNC_HEARTBEAT_INTERVAL", "negative"},
		{"status interval", func(c *Capture) { c.StatusInterval = 0 }, "CDCSYNC_STATUS_INTERVAL", "longer than 0"},
		{"watermark interval", func(c *Capture) { c.WatermarkInterval = -time.Millisecond }, "CDCSYNC_WATERMARK_INTERVAL", "negative"},
		{"in flight", func(c *Capture) { c.MaxInFlight = -1 }, "CDCSYNC_MAX_IN_FLIGHT", "positive"},
		{"in flight bytes", func(c *Capture) { c.MaxInFlightBytes = 0 }, "CDCSYNC_MAX_IN_FLIGHT_BYTES", "positive"},
		{"on poison", func(c *Capture) { c.OnPoison = "skip" }, "CDCSYNC_ON_POISON", "stop"},
		{"delivery", func(c *Capture) { c.Delivery = "exactly_once" }, "CDCSYNC_DELIVERY", `must be "at-least-once" or "exactly-once", got "exactly_once"`},
		{"transaction timeout", func(c *Capture) { c.TransactionTimeout = 0 }, "CDCSYNC_KAFKA_TRANSACTION_TIMEOUT", "longer than 0"},
		{"compression", func(c *Capture) { c.Compression = "brotli" }, "CDCSYNC_KAFKA_COMPRESSION", `one of "none", "gzip", "snappy", "lz4", "zstd", got "brotli"`},
		{"encoding", func(c *Capture) { c.Encoding.Encoding = "avro" }, "CDCSYNC_ENCODING", `must be "cdcsync" or "debezium", got "avro"`},
		{"decimal mode", func(c *Capture) { c.DecimalHandling = "exact" }, "CDCSYNC_DECIMAL_HANDLING_MODE", `one of "precise", "string", "double"`},
		{"time mode", func(c *Capture) { c.TimePrecision = "nanos" }, "CDCSYNC_TIME_PRECISION_MODE", `"adaptive_time_microseconds"`},
		{"interval mode", func(c *Capture) { c.IntervalHandling = "iso" }, "CDCSYNC_INTERVAL_HANDLING_MODE", `must be "numeric" or "string", got "iso"`},
		{"binary mode", func(c *Capture) { c.BinaryHandling = "base32" }, "CDCSYNC_BINARY_HANDLING_MODE", `"base64-url-safe"`},
		{"hstore mode", func(c *Capture) { c.HstoreHandling = "text" }, "CDCSYNC_HSTORE_HANDLING_MODE", `must be "json" or "map", got "text"`},
		{"placeholder", func(c *Capture) { c.UnavailablePlaceholder = "" }, "CDCSYNC_UNAVAILABLE_VALUE_PLACEHOLDER", "must not be empty"},
		{"batch", func(c *Capture) { c.BatchMessages = 0 }, "CDCSYNC_KAFKA_BATCH_MESSAGES", "positive"},
		{"linger", func(c *Capture) { c.Linger = -time.Millisecond }, "CDCSYNC_KAFKA_LINGER", "negative"},
		{"max message", func(c *Capture) { c.MaxMessageBytes = 0 }, "CDCSYNC_KAFKA_MAX_MESSAGE_BYTES", "positive"},
		{"shutdown", func(c *Capture) { c.ShutdownTimeout = 0 }, "CDCSYNC_SHUTDOWN_TIMEOUT", "longer than 0"},
		{"brokers empty", func(c *Capture) { c.Kafka.Brokers = nil }, "CDCSYNC_KAFKA_BROKERS", "must not be empty"},
		{"broker no port", func(c *Capture) { c.Kafka.Brokers = []string{"kafka"} }, "CDCSYNC_KAFKA_BROKERS", `broker "kafka": not host:port`},
		{"broker bad port", func(c *Capture) { c.Kafka.Brokers = []string{"kafka:ninety"} }, "CDCSYNC_KAFKA_BROKERS", "not a port number"},
		{"version", func(c *Capture) { c.Kafka.Version = "latest" }, "CDCSYNC_KAFKA_VERSION", `Kafka version such as 3.6.0, got "latest"`},
		{"old version", func(c *Capture) { c.Kafka.Version = "0.10.2.0" }, "CDCSYNC_KAFKA_VERSION", "at least 0.11.0"},
		{"client id", func(c *Capture) { c.Kafka.ClientID = "" }, "CDCSYNC_KAFKA_CLIENT_ID", "must not be empty"},
		{"ca without tls", func(c *Capture) { c.Kafka.TLSCAFile = caFile }, "CDCSYNC_KAFKA_TLS_CA_FILE", "CDCSYNC_KAFKA_TLS is false"},
		{"ca missing", func(c *Capture) { c.Kafka.TLS = true; c.Kafka.TLSCAFile = filepath.Join(dir, "nope.pem") }, "CDCSYNC_KAFKA_TLS_CA_FILE", "does not exist"},
		{"ca is dir", func(c *Capture) { c.Kafka.TLS = true; c.Kafka.TLSCAFile = dir }, "CDCSYNC_KAFKA_TLS_CA_FILE", "is a directory"},
		{"cert without key", func(c *Capture) { c.Kafka.TLS = true; c.Kafka.TLSCertFile = caFile }, "CDCSYNC_KAFKA_TLS_KEY_FILE", "needs both"},
		{"insecure without tls", func(c *Capture) { c.Kafka.TLSInsecure = true }, "CDCSYNC_KAFKA_TLS_INSECURE_SKIP_VERIFY", "CDCSYNC_KAFKA_TLS is false"},
		{"sasl mechanism", func(c *Capture) { c.Kafka.SASLMechanism = "GSSAPI" }, "CDCSYNC_KAFKA_SASL_MECHANISM", `got "GSSAPI"`},
		{"sasl user missing", func(c *Capture) { c.Kafka.SASLMechanism = "PLAIN" }, "CDCSYNC_KAFKA_SASL_USER", "required with CDCSYNC_KAFKA_SASL_MECHANISM=PLAIN"},
		{"sasl password missing", func(c *Capture) { c.Kafka.SASLMechanism = "SCRAM-SHA-512"; c.Kafka.SASLUser = "u" }, "CDCSYNC_KAFKA_SASL_PASSWORD", "required"},
		{"sasl user without mechanism", func(c *Capture) { c.Kafka.SASLUser = "u" }, "CDCSYNC_KAFKA_SASL_USER", "MECHANISM is empty"},
		{"http addr", func(c *Capture) { c.HTTP.Addr = "8080" }, "CDCSYNC_HTTP_ADDR", "host:port"},
		{"log format", func(c *Capture) { c.Log.Format = "xml" }, "CDCSYNC_LOG_FORMAT", `must be "text" or "json", got "xml"`},
		{"log level", func(c *Capture) { c.Log.Level = "loud" }, "CDCSYNC_LOG_LEVEL", `got "loud"`},
	}
}

func TestCaptureValidate(t *testing.T) {
	for _, tc := range captureCases(t) {
		c := validCapture(t)
		tc.modify(&c)
		checkErr(t, tc.label, c.Validate(), tc.name, tc.want)
	}
}

func TestCaptureValidateAccepts(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"ca.pem", "cert.pem", "key.pem"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		label  string
		modify func(*Capture)
	}{
		{"defaults", func(*Capture) {}},
		{"dsn", func(c *Capture) { c.SourceURL = "host=db user=cdc password='a b' dbname=orders" }},
		{"postgresql scheme", func(c *Capture) { c.SourceURL = "postgresql:///orders?host=/var/run/postgresql" }},
		{"zero heartbeat disables", func(c *Capture) { c.HeartbeatInterval = 0 }},
		{"zero watermark interval disables", func(c *Capture) { c.WatermarkInterval = 0 }},
		{"upper-case level", func(c *Capture) { c.Log.Level = "DEBUG" }},
		{"http disabled", func(c *Capture) { c.HTTP.Addr = "" }},
		{"mtls", func(c *Capture) {
			c.Kafka.TLS = true
			c.Kafka.TLSCAFile = filepath.Join(dir, "ca.pem")
			c.Kafka.TLSCertFile = filepath.Join(dir, "cert.pem")
			c.Kafka.TLSKeyFile = filepath.Join(dir, "key.pem")
		}},
		{"scram", func(c *Capture) {
			c.Kafka.SASLMechanism, c.Kafka.SASLUser, c.Kafka.SASLPassword = "SCRAM-SHA-256", "cdc", "pw"
		}},
		{"ipv6 broker", func(c *Capture) { c.Kafka.Brokers = []string{"[::1]:9092"} }},
	}
	for _, tc := range cases {
		c := validCapture(t)
		tc.modify(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", tc.label, err)
		}
	}
}

type sinkCase struct {
	label  string
	modify func(*Sink)
	name   string
	want   string
}

func sinkCases() []sinkCase {
	return []sinkCase{
		{"unknown sink", func(s *Sink) { s.Sinks = []string{"inventory", "mongo"} }, "CDCSYNC_SINKS", `unknown sink "mongo"`},
		{"no sinks", func(s *Sink) { s.Sinks = nil }, "CDCSYNC_SINKS", "must not be empty"},
		{"inventory url missing", func(s *Sink) { s.InventoryURL = "" }, "CDCSYNC_INVENTORY_URL", "required when CDCSYNC_SINKS includes inventory"},
		{"inventory url scheme", func(s *Sink) { s.InventoryURL = "redis://inv:hunter2@x" }, "CDCSYNC_INVENTORY_URL", "postgres://"},
		{"redis scheme", func(s *Sink) { s.RedisURL = "http://:hunter2@cache:6379" }, "CDCSYNC_REDIS_URL", `redis:// or rediss:// URL, got scheme "http"`},
		{"redis db", func(s *Sink) { s.RedisURL = "redis://:hunter2@cache:6379/zero" }, "CDCSYNC_REDIS_URL", "invalid database number"},
		{"redis unescaped", func(s *Sink) { s.RedisURL = "redis://:hun#ter2@cache:6379/0" }, "CDCSYNC_REDIS_URL", "percent-encode"},
		{"redis empty", func(s *Sink) { s.RedisURL = "" }, "CDCSYNC_REDIS_URL", "required when CDCSYNC_SINKS includes redis"},
		{"redis empty, cache on", func(s *Sink) { s.Sinks, s.RedisURL = []string{"inventory"}, "" }, "CDCSYNC_REDIS_URL", "CDCSYNC_AVAILABILITY_CACHE=off runs the inventory sink without Redis"},
		{"availability cache", func(s *Sink) { s.AvailabilityCache = "no" }, "CDCSYNC_AVAILABILITY_CACHE", `must be "on" or "off", got "no"`},
		{"tables", func(s *Sink) { s.Tables = []string{"orders"} }, "CDCSYNC_TABLES", "schema.table"},
		{"group prefix", func(s *Sink) { s.GroupPrefix = "" }, "CDCSYNC_GROUP_PREFIX", "a-z A-Z 0-9"},
		{"batch size", func(s *Sink) { s.BatchSize = 0 }, "CDCSYNC_SINK_BATCH_SIZE", "positive"},
		{"batch timeout", func(s *Sink) { s.BatchTimeout = 0 }, "CDCSYNC_SINK_BATCH_TIMEOUT", "longer than 0"},
		{"dlq suffix", func(s *Sink) { s.DLQSuffix = "" }, "CDCSYNC_DLQ_SUFFIX", "a-z A-Z 0-9"},
		{"dlq max message bytes", func(s *Sink) { s.DLQMaxMessageBytes = -1 }, "CDCSYNC_DLQ_MAX_MESSAGE_BYTES", "positive"},
		{"retry", func(s *Sink) { s.RetryMax = -time.Second }, "CDCSYNC_RETRY_MAX_BACKOFF", "negative"},
		{"instance id", func(s *Sink) { s.GroupInstanceID = "pod/1" }, "CDCSYNC_GROUP_INSTANCE_ID", `got "pod/1"`},
		{"sink shutdown", func(s *Sink) { s.ShutdownTimeout = 0 }, "CDCSYNC_SHUTDOWN_TIMEOUT", "longer than 0"},
		{"tombstone retention", func(s *Sink) { s.TombstoneRetention = -time.Second }, "CDCSYNC_TOMBSTONE_RETENTION", "negative"},
		{"orders table", func(s *Sink) { s.Inventory.OrdersTable = "orders" }, "CDCSYNC_ORDERS_TABLE", "schema.table"},
		{"id column", func(s *Sink) { s.Inventory.OrderIDColumn = "" }, "CDCSYNC_ORDER_ID_COLUMN", "must not be empty"},
		{"item column", func(s *Sink) { s.Inventory.ItemColumn = " " }, "CDCSYNC_ORDER_ITEM_COLUMN", "must not be empty"},
		{"quantity column", func(s *Sink) { s.Inventory.QuantityColumn = "" }, "CDCSYNC_ORDER_QUANTITY_COLUMN", "must not be empty"},
		{"status column", func(s *Sink) { s.Inventory.StatusColumn = "" }, "CDCSYNC_ORDER_STATUS_COLUMN", "must not be empty"},
		{"statuses", func(s *Sink) { s.Inventory.ReservedStatuses = nil }, "CDCSYNC_RESERVED_STATUSES", "must not be empty"},
		{"overlap", func(s *Sink) { s.Inventory.ShippedStatuses = []string{"paid"} }, "CDCSYNC_SHIPPED_STATUSES", `"paid" is also in CDCSYNC_RESERVED_STATUSES`},
		{"kafka", func(s *Sink) { s.Kafka.Brokers = []string{":9092"} }, "CDCSYNC_KAFKA_BROKERS", "host is missing"},
		{"log", func(s *Sink) { s.Log.Format = "logfmt" }, "CDCSYNC_LOG_FORMAT", "logfmt"},
	}
}

func TestSinkValidate(t *testing.T) {
	for _, tc := range sinkCases() {
		s := validSink(t)
		tc.modify(&s)
		checkErr(t, tc.label, s.Validate(), tc.name, tc.want)
	}
}

func TestSinkValidateOnlyChecksSelectedSinks(t *testing.T) {
	s := validSink(t)
	s.Sinks = []string{"redis"}
	s.InventoryURL = ""
	if err := s.Validate(); err != nil {
		t.Errorf("redis only, no inventory URL: %v", err)
	}
	s = validSink(t)
	s.Sinks = []string{"inventory"}
	s.RedisURL = ""
	s.AvailabilityCache = "off"
	if err := s.Validate(); err != nil {
		t.Errorf("inventory only, no redis URL, availability cache off: %v", err)
	}
	s.RedisURL = "http://:hunter2@unused"
	if err := s.Validate(); err != nil {
		t.Errorf("inventory only, availability cache off: the redis URL is not used, yet: %v", err)
	}
	s = validSink(t)
	s.RedisURL = "rediss://default:pw@cache.example:6380/2"
	if err := s.Validate(); err != nil {
		t.Errorf("rediss URL: %v", err)
	}
}

func TestDevBrokerValidate(t *testing.T) {
	var d DevBroker
	isolateEnv(t, &d, map[string]string{"CDCSYNC_DEV_BROKER_TOPICS": "cdc.public.orders:8,cdc.public.items"})
	if err := Load(&d); err != nil {
		t.Fatal(err)
	}
	d.Topics = []string{"ok", "bad/name"}
	checkErr(t, "topic name", d.Validate(), "CDCSYNC_DEV_BROKER_TOPICS", `topic "bad/name"`)
	d.Topics = []string{"t:zero"}
	checkErr(t, "partitions", d.Validate(), "CDCSYNC_DEV_BROKER_TOPICS", `partitions must be a positive integer, got "zero"`)
	d.Topics = nil
	d.Addr = "localhost"
	checkErr(t, "addr", d.Validate(), "CDCSYNC_DEV_BROKER_ADDR", "host:port")
}

func TestParseTopicSpec(t *testing.T) {
	name, p, err := ParseTopicSpec("cdc.public.orders:12")
	if err != nil || name != "cdc.public.orders" || p != 12 {
		t.Errorf("got %q %d %v", name, p, err)
	}
	name, p, err = ParseTopicSpec("cdc.public.orders")
	if err != nil || name != "cdc.public.orders" || p != 0 {
		t.Errorf("got %q %d %v", name, p, err)
	}
	if _, _, err := ParseTopicSpec(".."); err == nil {
		t.Error(`".." accepted`)
	}
}

// notValidated are variables with nothing to check: booleans (envconfig
// already rejects anything else) and free-form strings.
var notValidated = map[string]string{
	"CDCSYNC_KAFKA_TLS":                    "bool",
	"CDCSYNC_KAFKA_TLS_CERT_FILE":          "checked with the key file (mtls case)",
	"CDCSYNC_OUTBOX_PREFIX":                "any logical decoding message prefix",
	"CDCSYNC_SCHEMAS_ENABLE":               "bool",
	"CDCSYNC_PROVIDE_TRANSACTION_METADATA": "bool",
}

// Every variable of capture and sink either has a validation case above or
// is listed in notValidated, so that a new setting cannot slip in without
// someone deciding what a bad value looks like.
func TestEveryVariableIsValidated(t *testing.T) {
	covered := map[string]bool{}
	for _, tc := range captureCases(t) {
		covered[tc.name] = true
	}
	for _, tc := range sinkCases() {
		covered[tc.name] = true
	}
	for _, tc := range opsCases() {
		covered[tc.name] = true
	}
	for _, spec := range []any{&Capture{}, &Sink{}, &Status{}, &Verify{}, &Demo{}} {
		for _, v := range Vars(spec) {
			if !covered[v.Name] && notValidated[v.Name] == "" {
				t.Errorf("%s has no case in TestCaptureValidate/TestSinkValidate/TestOpsValidate: add a check in validate.go and a case, or list it in notValidated with the reason", v.Name)
			}
		}
	}
}

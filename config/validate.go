package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"
)

// Validate reports the first problem with the capture configuration as an
// *Error, or nil.
func (c Capture) Validate() error {
	return first(
		func() error { return checkPostgresURL("SOURCE_URL", c.SourceURL) },
		func() error { return checkTables("TABLES", c.Tables) },
		func() error { return checkSlotName("SLOT", c.Slot) },
		func() error { return checkSlotName("PUBLICATION", c.Publication) },
		func() error { return checkOneOf("SLOT_BUSY", c.SlotBusy, "wait", "fail") },
		func() error { return checkOneOf("SNAPSHOT", c.Snapshot, "initial", "never", "when_needed") },
		func() error { return checkPositive("SNAPSHOT_CHUNK_SIZE", c.SnapshotChunkSize) },
		func() error { return checkPositive("SNAPSHOT_MAX_CHUNK_BYTES", c.SnapshotMaxBytes) },
		func() error { return checkIdentifier("STATE_SCHEMA", c.StateSchema) },
		func() error { return checkTopicPart("TOPIC_PREFIX", c.TopicPrefix) },
		func() error {
			if c.OutboxTable == "" {
				return nil
			}
			return checkTables("OUTBOX_TABLE", []string{c.OutboxTable})
		},
		func() error {
			if c.OutboxTopicPrefix == "" {
				return nil
			}
			return checkTopicPart("OUTBOX_TOPIC_PREFIX", c.OutboxTopicPrefix)
		},
		func() error {
			if c.TopicCleanupPolicy == "" { // built in code: the default
				return nil
			}
			return checkOneOf("TOPIC_CLEANUP_POLICY", c.TopicCleanupPolicy, "compact", "delete")
		},
		func() error { return checkPositive("TOPIC_PARTITIONS", c.TopicPartitions) },
		func() error {
			if c.TopicReplication == -1 || c.TopicReplication > 0 {
				return nil
			}
			return errorf("TOPIC_REPLICATION_FACTOR", "must be -1 (broker default) or at least 1, got %d", c.TopicReplication)
		},
		func() error { return checkDuration("HEARTBEAT_INTERVAL", c.HeartbeatInterval, true) },
		func() error { return checkDuration("STATUS_INTERVAL", c.StatusInterval, false) },
		func() error { return checkDuration("WATERMARK_INTERVAL", c.WatermarkInterval, true) },
		func() error { return checkPositive("MAX_IN_FLIGHT", c.MaxInFlight) },
		func() error { return checkPositive("MAX_IN_FLIGHT_BYTES", c.MaxInFlightBytes) },
		func() error {
			return checkOneOf("KAFKA_COMPRESSION", c.Compression, "none", "gzip", "snappy", "lz4", "zstd")
		},
		func() error { return checkPositive("KAFKA_BATCH_MESSAGES", c.BatchMessages) },
		func() error { return checkDuration("KAFKA_LINGER", c.Linger, true) },
		func() error { return checkPositive("KAFKA_MAX_MESSAGE_BYTES", c.MaxMessageBytes) },
		func() error { return checkOneOf("ON_POISON", c.OnPoison, "stop", "dlq") },
		func() error { return checkOneOf("DELIVERY", c.Delivery, "at-least-once", "exactly-once") },
		func() error { return checkDuration("KAFKA_TRANSACTION_TIMEOUT", c.TransactionTimeout, false) },
		func() error { return checkDuration("SHUTDOWN_TIMEOUT", c.ShutdownTimeout, false) },
		c.Kafka.Validate,
		c.HTTP.Validate,
		c.Log.Validate,
		c.Encoding.Validate,
	)
}

// Validate checks the encoding settings.
func (e Encoding) Validate() error {
	return first(
		func() error { return checkOneOf("ENCODING", e.Encoding, "cdcsync", "debezium") },
		func() error {
			return checkOneOf("DECIMAL_HANDLING_MODE", e.DecimalHandling, "precise", "string", "double")
		},
		func() error {
			return checkOneOf("TIME_PRECISION_MODE", e.TimePrecision, "adaptive", "adaptive_time_microseconds", "connect")
		},
		func() error { return checkOneOf("INTERVAL_HANDLING_MODE", e.IntervalHandling, "numeric", "string") },
		func() error {
			return checkOneOf("BINARY_HANDLING_MODE", e.BinaryHandling, "bytes", "base64", "base64-url-safe", "hex")
		},
		func() error { return checkOneOf("HSTORE_HANDLING_MODE", e.HstoreHandling, "json", "map") },
		func() error { return checkNonEmpty("UNAVAILABLE_VALUE_PLACEHOLDER", e.UnavailablePlaceholder) },
	)
}

// Sink names accepted in CDCSYNC_SINKS.
const (
	SinkInventory = "inventory"
	SinkRedis     = "redis"
)

// Has reports whether the sink named name is selected in CDCSYNC_SINKS.
func (s Sink) Has(name string) bool {
	for _, n := range s.Sinks {
		if n == name {
			return true
		}
	}
	return false
}

// Validate reports the first problem with the sink configuration as an
// *Error, or nil.
func (s Sink) Validate() error {
	return first(
		func() error { return checkSinks("SINKS", s.Sinks) },
		func() error {
			if !s.Has(SinkInventory) {
				return nil
			}
			if s.InventoryURL == "" {
				return errorf("INVENTORY_URL", "required when CDCSYNC_SINKS includes inventory, but not set")
			}
			return checkPostgresURL("INVENTORY_URL", s.InventoryURL)
		},
		func() error { return checkSwitch("AVAILABILITY_CACHE", s.AvailabilityCache) },
		func() error {
			if s.Has(SinkRedis) {
				return checkRedisURL("REDIS_URL", s.RedisURL)
			}
			if !s.AvailabilityCacheOn() {
				return nil
			}
			if strings.TrimSpace(s.RedisURL) == "" {
				return errorf("REDIS_URL", "required for the inventory sink's availability cache, but not set; CDCSYNC_AVAILABILITY_CACHE=off runs the inventory sink without Redis")
			}
			return checkRedisURL("REDIS_URL", s.RedisURL)
		},
		func() error { return checkTables("TABLES", s.Tables) },
		func() error { return checkTopicPart("TOPIC_PREFIX", s.TopicPrefix) },
		func() error { return checkTopicPart("GROUP_PREFIX", s.GroupPrefix) },
		func() error { return checkPositive("SINK_BATCH_SIZE", s.BatchSize) },
		func() error { return checkDuration("SINK_BATCH_TIMEOUT", s.BatchTimeout, false) },
		func() error { return checkTopicPart("DLQ_SUFFIX", s.DLQSuffix) },
		func() error {
			if s.DLQMaxMessageBytes == 0 {
				return nil // a configuration built in code: the default
			}
			return checkPositive("DLQ_MAX_MESSAGE_BYTES", s.DLQMaxMessageBytes)
		},
		func() error { return checkDuration("RETRY_MAX_BACKOFF", s.RetryMax, false) },
		func() error {
			if s.GroupInstanceID == "" || (len(s.GroupInstanceID) <= 249 && topicChars.MatchString(s.GroupInstanceID)) {
				return nil
			}
			return errorf("GROUP_INSTANCE_ID", "must be up to 249 characters of a-z A-Z 0-9 . _ -, got %q", s.GroupInstanceID)
		},
		func() error { return checkDuration("SHUTDOWN_TIMEOUT", s.ShutdownTimeout, false) },
		func() error { return checkDuration("TOMBSTONE_RETENTION", s.TombstoneRetention, true) },
		s.Inventory.Validate,
		s.Kafka.Validate,
		s.HTTP.Validate,
		s.Log.Validate,
	)
}

// Validate checks the order columns and statuses of the inventory sink.
func (inv Inventory) Validate() error {
	return first(
		func() error { return checkTables("ORDERS_TABLE", []string{inv.OrdersTable}) },
		func() error { return checkNonEmpty("ORDER_ID_COLUMN", inv.OrderIDColumn) },
		func() error { return checkNonEmpty("ORDER_ITEM_COLUMN", inv.ItemColumn) },
		func() error { return checkNonEmpty("ORDER_QUANTITY_COLUMN", inv.QuantityColumn) },
		func() error { return checkNonEmpty("ORDER_STATUS_COLUMN", inv.StatusColumn) },
		func() error { return checkList("RESERVED_STATUSES", inv.ReservedStatuses) },
		func() error { return checkList("SHIPPED_STATUSES", inv.ShippedStatuses) },
		func() error {
			for _, r := range inv.ReservedStatuses {
				for _, s := range inv.ShippedStatuses {
					if r == s {
						return errorf("SHIPPED_STATUSES", "status %q is also in CDCSYNC_RESERVED_STATUSES; a status either reserves or ships", s)
					}
				}
			}
			return nil
		},
	)
}

// minKafkaVersion is the oldest protocol version cdcsync can speak: events
// carry their position in record headers, which arrived in 0.11.
var minKafkaVersion = sarama.V0_11_0_0

// Validate checks the broker list, protocol version, TLS files and SASL
// settings.
func (k Kafka) Validate() error {
	return first(
		func() error {
			if err := checkList("KAFKA_BROKERS", k.Brokers); err != nil {
				return err
			}
			for _, b := range k.Brokers {
				if err := checkHostPort(b, true); err != nil {
					return errorf("KAFKA_BROKERS", "broker %q: %v", b, err)
				}
			}
			return nil
		},
		func() error {
			v, err := sarama.ParseKafkaVersion(k.Version)
			if err != nil {
				return errorf("KAFKA_VERSION", "must be a Kafka version such as 3.6.0, got %q", k.Version)
			}
			if !v.IsAtLeast(minKafkaVersion) {
				return errorf("KAFKA_VERSION", "must be at least %s (record headers), got %q", minKafkaVersion, k.Version)
			}
			return nil
		},
		func() error { return checkNonEmpty("KAFKA_CLIENT_ID", k.ClientID) },
		k.validateTLS,
		k.validateSASL,
	)
}

func (k Kafka) validateTLS() error {
	files := []struct{ name, path string }{
		{"KAFKA_TLS_CA_FILE", k.TLSCAFile},
		{"KAFKA_TLS_CERT_FILE", k.TLSCertFile},
		{"KAFKA_TLS_KEY_FILE", k.TLSKeyFile},
	}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		// Certificates without TLS would silently connect in plain text.
		if !k.TLS {
			return errorf(f.name, "is set but CDCSYNC_KAFKA_TLS is false; set CDCSYNC_KAFKA_TLS=true")
		}
		if err := checkReadableFile(f.path); err != nil {
			return errorf(f.name, "%v", err)
		}
	}
	if k.TLSInsecure && !k.TLS {
		return errorf("KAFKA_TLS_INSECURE_SKIP_VERIFY", "is set but CDCSYNC_KAFKA_TLS is false; set CDCSYNC_KAFKA_TLS=true")
	}
	if (k.TLSCertFile == "") != (k.TLSKeyFile == "") {
		if k.TLSCertFile == "" {
			return errorf("KAFKA_TLS_CERT_FILE", "required with CDCSYNC_KAFKA_TLS_KEY_FILE (mutual TLS needs both), but not set")
		}
		return errorf("KAFKA_TLS_KEY_FILE", "required with CDCSYNC_KAFKA_TLS_CERT_FILE (mutual TLS needs both), but not set")
	}
	return nil
}

// SASL mechanisms accepted in CDCSYNC_KAFKA_SASL_MECHANISM.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

func (k Kafka) validateSASL() error {
	if k.SASLMechanism == "" {
		if k.SASLUser != "" {
			return errorf("KAFKA_SASL_USER", "is set but CDCSYNC_KAFKA_SASL_MECHANISM is empty; set it to PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
		}
		if k.SASLPassword != "" {
			return errorf("KAFKA_SASL_PASSWORD", "is set but CDCSYNC_KAFKA_SASL_MECHANISM is empty; set it to PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
		}
		return nil
	}
	if err := checkOneOf("KAFKA_SASL_MECHANISM", k.SASLMechanism, SASLPlain, SASLScramSHA256, SASLScramSHA512); err != nil {
		return err
	}
	if k.SASLUser == "" {
		return errorf("KAFKA_SASL_USER", "required with CDCSYNC_KAFKA_SASL_MECHANISM=%s, but not set", k.SASLMechanism)
	}
	if k.SASLPassword == "" {
		return errorf("KAFKA_SASL_PASSWORD", "required with CDCSYNC_KAFKA_SASL_MECHANISM=%s, but not set", k.SASLMechanism)
	}
	return nil
}

// Validate checks the listen address (empty disables the server).
func (h HTTP) Validate() error {
	if h.Addr == "" {
		return nil
	}
	if err := checkHostPort(h.Addr, false); err != nil {
		return errorf("HTTP_ADDR", "%v; use host:port or :port, e.g. :8080", err)
	}
	return nil
}

// Validate checks the log format and level.
func (l Log) Validate() error {
	return first(
		func() error { return checkOneOf("LOG_FORMAT", l.Format, "text", "json") },
		func() error {
			return checkOneOf("LOG_LEVEL", strings.ToLower(l.Level), "debug", "info", "warn", "error")
		},
	)
}

// Validate checks the development broker's settings.
func (d DevBroker) Validate() error {
	return first(
		func() error {
			if err := checkHostPort(d.Addr, false); err != nil {
				return errorf("DEV_BROKER_ADDR", "%v; use host:port, e.g. 127.0.0.1:9092", err)
			}
			return nil
		},
		func() error {
			for _, t := range d.Topics {
				if _, _, err := ParseTopicSpec(t); err != nil {
					return errorf("DEV_BROKER_TOPICS", "%v", err)
				}
			}
			return nil
		},
		func() error { return checkPositive("DEV_BROKER_PARTITIONS", d.Partitions) },
		d.Log.Validate,
	)
}

// ParseTopicSpec reads one CDCSYNC_DEV_BROKER_TOPICS entry: "name" or
// "name:partitions" (partitions 0 means the default).
func ParseTopicSpec(s string) (name string, partitions int32, err error) {
	name, p, hasP := strings.Cut(s, ":")
	if !validTopicName(name) {
		return "", 0, fmt.Errorf("topic %q: a topic name is 1 to 249 characters of a-z A-Z 0-9 . _ -", name)
	}
	if !hasP {
		return name, 0, nil
	}
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil || n < 1 {
		return "", 0, fmt.Errorf("topic %q: partitions must be a positive integer, got %q", name, p)
	}
	return name, int32(n), nil
}

// first runs the checks in order and returns the first error.
func first(checks ...func() error) error {
	for _, c := range checks {
		if err := c(); err != nil {
			return err
		}
	}
	return nil
}

func checkNonEmpty(name, v string) error {
	if strings.TrimSpace(v) == "" {
		return errorf(name, "must not be empty")
	}
	return nil
}

func checkOneOf(name, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = strconv.Quote(a)
	}
	var want string
	switch len(quoted) {
	case 2:
		want = quoted[0] + " or " + quoted[1]
	default:
		want = "one of " + strings.Join(quoted, ", ")
	}
	return errorf(name, "must be %s, got %q", want, v)
}

func checkPositive[T int | int16 | int32 | int64](name string, v T) error {
	if v <= 0 {
		return errorf(name, "must be a positive number, got %d", v)
	}
	return nil
}

func checkDuration(name string, d time.Duration, zeroOK bool) error {
	switch {
	case d < 0:
		return errorf(name, "must not be negative, got %s", d)
	case d == 0 && !zeroOK:
		return errorf(name, "must be longer than 0")
	}
	return nil
}

// checkList rejects an empty list, blank entries and duplicates.
func checkList(name string, list []string) error {
	if len(list) == 0 {
		return errorf(name, "must not be empty")
	}
	seen := map[string]bool{}
	for _, v := range list {
		if strings.TrimSpace(v) == "" {
			return errorf(name, "has an empty entry (check for a stray comma)")
		}
		if v != strings.TrimSpace(v) {
			return errorf(name, "entry %q has surrounding spaces; separate entries with a bare comma", v)
		}
		if seen[v] {
			return errorf(name, "lists %q twice", v)
		}
		seen[v] = true
	}
	return nil
}

func checkSinks(name string, sinks []string) error {
	if err := checkList(name, sinks); err != nil {
		return err
	}
	for _, s := range sinks {
		if s != SinkInventory && s != SinkRedis {
			return errorf(name, "unknown sink %q; the sinks are inventory and redis", s)
		}
	}
	return nil
}

// checkTables wants schema.table entries of non-empty parts.
func checkTables(name string, tables []string) error {
	if err := checkList(name, tables); err != nil {
		return err
	}
	for _, t := range tables {
		schema, table, ok := strings.Cut(t, ".")
		if !ok || schema == "" || table == "" || strings.Contains(table, ".") {
			return errorf(name, "entry %q must be schema.table, e.g. public.orders", t)
		}
		if len(schema) > maxIdentifier || len(table) > maxIdentifier {
			return errorf(name, "entry %q: names are at most %d bytes", t, maxIdentifier)
		}
	}
	return nil
}

// maxIdentifier is Postgres' NAMEDATALEN-1.
const maxIdentifier = 63

// slotName is what Postgres accepts as a replication slot name. The same
// rule is applied to the publication so that both can be typed unquoted in
// psql by an operator.
var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

func checkSlotName(name, v string) error {
	if !slotName.MatchString(v) {
		return errorf(name, "must be 1 to 63 characters of a-z, 0-9 and _, got %q", v)
	}
	return nil
}

func checkIdentifier(name, v string) error {
	if v == "" || len(v) > maxIdentifier || strings.ContainsRune(v, 0) {
		return errorf(name, "must be a Postgres name of 1 to %d bytes, got %q", maxIdentifier, v)
	}
	return nil
}

var topicChars = regexp.MustCompile(`^[a-zA-Z0-9._-]+$`)

func validTopicName(s string) bool {
	return len(s) <= 249 && topicChars.MatchString(s) && s != "." && s != ".."
}

// checkTopicPart checks a string that becomes part of a topic or group
// name.
func checkTopicPart(name, v string) error {
	if !topicChars.MatchString(v) {
		return errorf(name, "must be characters of a-z A-Z 0-9 . _ -, got %q", v)
	}
	return nil
}

func checkHostPort(s string, needHost bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("not host:port")
	}
	if needHost && host == "" {
		return errors.New("host is missing")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || (needHost && n == 0) {
		return fmt.Errorf("port %q is not a port number", port)
	}
	return nil
}

func checkReadableFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("file %q does not exist", path)
		}
		return fmt.Errorf("cannot read %q: %v", path, errors.Unwrap(err))
	}
	st, err := f.Stat()
	_ = f.Close()
	if err == nil && st.IsDir() {
		return fmt.Errorf("%q is a directory, not a file", path)
	}
	return nil
}

// checkPostgresURL accepts a postgres:// or postgresql:// URL or a
// key=value DSN that pgx can use. Messages never repeat the input: it may
// hold a password.
func checkPostgresURL(name, s string) error {
	if strings.TrimSpace(s) == "" {
		return errorf(name, "must not be empty")
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return errorf(name, "is not a valid URL; percent-encode special characters in the user name and password")
		}
		if u.Scheme != "postgres" && u.Scheme != "postgresql" {
			return errorf(name, "must be a postgres:// or postgresql:// URL, got scheme %q", u.Scheme)
		}
	} else if !strings.Contains(s, "=") {
		return errorf(name, "must be a postgres:// URL (or a key=value connection string)")
	}
	if _, err := pgconn.ParseConfig(s); err != nil {
		return errorf(name, "is not a usable postgres connection string: %s", pgconnProblem(err))
	}
	return nil
}

// pgconnProblem extracts the reason from a pgconn parse error, whose text
// is "cannot parse `<redacted input>`: <reason>", leaving the input out.
func pgconnProblem(err error) string {
	var pe *pgconn.ParseConfigError
	if !errors.As(err, &pe) {
		return "unrecognised settings"
	}
	text := pe.Error()
	if i := strings.LastIndex(text, "`: "); i >= 0 {
		text = text[i+3:]
	}
	// Belt and braces: the reason must not quote the password. Very short
	// passwords are left alone: replacing them would garble ordinary words
	// of the message and they cannot be told apart from them anyway.
	if pw := passwordOf(pe.ConnString); len(pw) >= 4 {
		text = strings.ReplaceAll(text, pw, redacted)
	}
	return text
}

// passwordOf returns the password in a postgres URL or DSN, if it can tell.
func passwordOf(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		p, _ := u.User.Password()
		return p
	}
	if m := dsnSecret.FindStringSubmatch(s); m != nil {
		return strings.Trim(m[3], "'")
	}
	return ""
}

func checkRedisURL(name, s string) error {
	if strings.TrimSpace(s) == "" {
		return errorf(name, "required when CDCSYNC_SINKS includes redis, but not set")
	}
	if p := RedisURLProblem(s); p != "" {
		return errorf(name, "%s", p)
	}
	return nil
}

// RedisURLProblem says why s is not a usable Redis URL, or "" when it is.
// The answer never holds the password: the url package's errors quote the
// URL, cut wherever a '#' or '/' in the password ends what it could parse,
// so they are described rather than shown, and go-redis's own errors
// (which may quote a query value) have the password replaced.
func RedisURLProblem(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "is not a valid URL; percent-encode special characters in the password"
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Sprintf("must be a redis:// or rediss:// URL, got scheme %q", u.Scheme)
	}
	if _, err := redis.ParseURL(s); err != nil {
		msg := strings.TrimPrefix(err.Error(), "redis: ")
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, redacted)
			msg = strings.ReplaceAll(msg, url.QueryEscape(pw), redacted)
		}
		return msg
	}
	return ""
}

// checkSwitch checks an on/off variable; empty (a configuration built in
// code) means the default.
func checkSwitch(name, v string) error {
	if v == "" {
		return nil
	}
	return checkOneOf(name, v, "on", "off")
}

// AvailabilityCacheOn reports whether the inventory sink keeps the
// availability cache in Redis.
func (s Sink) AvailabilityCacheOn() bool {
	return s.Has(SinkInventory) && s.AvailabilityCache != "off"
}

// Validate reports the first problem with the status configuration.
func (s Status) Validate() error {
	return first(
		func() error { return checkPostgresURL("SOURCE_URL", s.SourceURL) },
		func() error { return checkSlotName("SLOT", s.Slot) },
		func() error { return checkTables("TABLES", s.Tables) },
		func() error { return checkTables("ORDERS_TABLE", []string{s.OrdersTable}) },
		func() error { return checkTopicPart("TOPIC_PREFIX", s.TopicPrefix) },
		func() error { return checkTopicPart("GROUP_PREFIX", s.GroupPrefix) },
		func() error { return checkSinks("SINKS", s.Sinks) },
		func() error { return checkIdentifier("STATE_SCHEMA", s.StateSchema) },
		func() error {
			if s.InventoryURL == "" {
				return nil
			}
			return checkPostgresURL("INVENTORY_URL", s.InventoryURL)
		},
		func() error {
			if p := RedisURLProblem(s.RedisURL); s.RedisURL != "" && p != "" {
				return errorf("REDIS_URL", "%s", p)
			}
			return nil
		},
		s.Kafka.Validate,
	)
}

// Has reports whether the sink named name is selected in CDCSYNC_SINKS.
func (s Status) Has(name string) bool { return slices.Contains(s.Sinks, name) }

// Has reports whether the sink named name is selected in CDCSYNC_SINKS.
func (v Verify) Has(name string) bool { return slices.Contains(v.Sinks, name) }

// Validate reports the first problem with the verify configuration.
func (v Verify) Validate() error {
	return first(
		func() error { return checkPostgresURL("SOURCE_URL", v.SourceURL) },
		func() error { return checkSinks("SINKS", v.Sinks) },
		func() error {
			if !v.Has(SinkInventory) {
				return nil
			}
			if v.InventoryURL == "" {
				return errorf("INVENTORY_URL", "required when CDCSYNC_SINKS includes inventory, but not set")
			}
			return checkPostgresURL("INVENTORY_URL", v.InventoryURL)
		},
		func() error { return checkSwitch("AVAILABILITY_CACHE", v.AvailabilityCache) },
		func() error {
			// Without the redis sink an empty URL, or the availability
			// cache switched off, skips the availability cache; a URL
			// that is used must be usable.
			if !v.Has(SinkRedis) && (v.RedisURL == "" || v.AvailabilityCache == "off") {
				return nil
			}
			return checkRedisURL("REDIS_URL", v.RedisURL)
		},
		func() error { return checkTables("TABLES", v.Tables) },
		func() error { return checkSlotName("SLOT", v.Slot) },
		func() error { return checkTopicPart("TOPIC_PREFIX", v.TopicPrefix) },
		func() error { return checkTopicPart("GROUP_PREFIX", v.GroupPrefix) },
		func() error { return checkPositive("VERIFY_MAX_REPORT", v.MaxReport) },
		func() error { return checkDuration("VERIFY_CUT_WAIT", v.CutWait, true) },
		func() error { return checkIdentifier("STATE_SCHEMA", v.StateSchema) },
		v.Inventory.Validate,
		v.Kafka.Validate,
	)
}

// Upper bounds of the demo's knobs: beyond them the demo is no longer a
// demo on one machine.
const (
	maxDemoRate  = 100000
	maxDemoItems = 10000000
)

// Validate reports the first problem with the demo configuration.
func (d Demo) Validate() error {
	return first(
		func() error { return checkDuration("DEMO_DURATION", d.Duration, true) },
		func() error {
			if err := checkPositive("DEMO_RATE", d.Rate); err != nil {
				return err
			}
			if d.Rate > maxDemoRate {
				return errorf("DEMO_RATE", "must be at most %d, got %d", maxDemoRate, d.Rate)
			}
			return nil
		},
		func() error {
			if err := checkPositive("DEMO_ITEMS", d.Items); err != nil {
				return err
			}
			if d.Items > maxDemoItems {
				return errorf("DEMO_ITEMS", "must be at most %d, got %d", maxDemoItems, d.Items)
			}
			return nil
		},
		d.Log.Validate,
	)
}

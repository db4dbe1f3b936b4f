// Package config reads cdcsync's configuration from CDCSYNC_ environment
// variables (envconfig) and validates it. Each command loads the struct it
// needs; ../shared/DESIGN.md fixes the variable names.
package config

import "time"

// Prefix is the environment variable prefix of every setting.
const Prefix = "CDCSYNC"

// Log configures structured logging.
type Log struct {
	Format string `envconfig:"LOG_FORMAT" default:"text" desc:"log format: text or json"`
	Level  string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
}

// Kafka configures the connection to the brokers.
type Kafka struct {
	Brokers       []string `envconfig:"KAFKA_BROKERS" default:"localhost:9092" desc:"bootstrap brokers, comma-separated host:port"`
	Version       string   `envconfig:"KAFKA_VERSION" default:"3.6.0" desc:"Kafka protocol version to speak"`
	ClientID      string   `envconfig:"KAFKA_CLIENT_ID" default:"cdcsync" desc:"client id sent to the brokers"`
	TLS           bool     `envconfig:"KAFKA_TLS" default:"false" desc:"connect to the brokers over TLS"`
	TLSCAFile     string   `envconfig:"KAFKA_TLS_CA_FILE" desc:"PEM CA bundle that signs the brokers' certificates"`
	TLSCertFile   string   `envconfig:"KAFKA_TLS_CERT_FILE" desc:"PEM client certificate for mutual TLS"`
	TLSKeyFile    string   `envconfig:"KAFKA_TLS_KEY_FILE" desc:"PEM client key for mutual TLS"`
	TLSInsecure   bool     `envconfig:"KAFKA_TLS_INSECURE_SKIP_VERIFY" default:"false" desc:"skip broker certificate verification (testing only)"`
	SASLMechanism string   `envconfig:"KAFKA_SASL_MECHANISM" desc:"PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty disables SASL"`
	SASLUser      string   `envconfig:"KAFKA_SASL_USER" desc:"SASL user name"`
	SASLPassword  string   `envconfig:"KAFKA_SASL_PASSWORD" desc:"SASL password (secret)" secret:"true"`
}

// HTTP configures the metrics and health endpoint.
type HTTP struct {
	Addr string `envconfig:"HTTP_ADDR" default:":8080" desc:"listen address for /metrics, /healthz and /readyz; empty disables"`
}

// Capture is the configuration of `cdcsync capture`.
type Capture struct {
	SourceURL         string        `envconfig:"SOURCE_URL" required:"true" desc:"order database, postgres URL" secret:"url"`
	Tables            []string      `envconfig:"TABLES" default:"public.orders" desc:"tables to capture, comma-separated schema.table"`
	Slot              string        `envconfig:"SLOT" default:"cdcsync" desc:"logical replication slot (created if missing)"`
	Publication       string        `envconfig:"PUBLICATION" default:"cdcsync" desc:"publication (created if missing)"`
	SlotBusy          string        `envconfig:"SLOT_BUSY" default:"wait" desc:"when the slot is active in another process: wait (standby; take over when it is released) or fail"`
	Snapshot          string        `envconfig:"SNAPSHOT" default:"initial" desc:"initial (read existing rows as a resumable backfill when the slot is new, and those of tables added to CDCSYNC_TABLES later), never, or when_needed (as initial, and over a lost slot or changed source: a new slot, every table read again, and the sinks remove what was not re-emitted); initial and never refuse to continue over a lost slot (README: When the order database fails over)"`
	SnapshotChunkSize int           `envconfig:"SNAPSHOT_CHUNK_SIZE" default:"10000" desc:"rows per primary-key chunk when snapshotting"`
	SnapshotMaxBytes  int           `envconfig:"SNAPSHOT_MAX_CHUNK_BYTES" default:"33554432" desc:"bytes of row data in one snapshot chunk (it ends early at this size) and of the keys changed while it is read (more: the chunk is read again); bounds snapshot memory"`
	StateSchema       string        `envconfig:"STATE_SCHEMA" default:"cdcsync" desc:"schema in the order database for capture's own state (snapshot progress, signals)"`
	TopicPrefix       string        `envconfig:"TOPIC_PREFIX" default:"cdc" desc:"topic per table: <prefix>.<schema>.<table>"`
	TopicPartitions   int32         `envconfig:"TOPIC_PARTITIONS" default:"4" desc:"partitions of topics created at start-up"`
	TopicReplication  int16         `envconfig:"TOPIC_REPLICATION_FACTOR" default:"-1" desc:"replication factor of topics created at start-up; -1 uses the broker default"`
	HeartbeatInterval time.Duration `envconfig:"HEARTBEAT_INTERVAL" default:"10s" desc:"how often a heartbeat message is written so an idle slot advances; 0 disables"`
	StatusInterval    time.Duration `envconfig:"STATUS_INTERVAL" default:"1s" desc:"how often the confirmed LSN is sent to Postgres"`
	WatermarkInterval time.Duration `envconfig:"WATERMARK_INTERVAL" default:"10ms" desc:"how often, at most, capture writes watermarks telling the sinks how far each partition of the table topics is complete (read-your-writes); 0 disables; 0 unless set when CDCSYNC_ENCODING=debezium, whose consumers expect only Debezium records on the table topics"`
	MaxInFlight       int           `envconfig:"MAX_IN_FLIGHT" default:"20000" desc:"messages produced but not yet acknowledged before reading pauses (backpressure)"`
	MaxInFlightBytes  int64         `envconfig:"MAX_IN_FLIGHT_BYTES" default:"67108864" desc:"bytes of messages produced but not yet acknowledged before reading pauses (64 MiB; whichever of this and MAX_IN_FLIGHT is reached first; one larger message still passes); capture's memory follows it"`
	Compression       string        `envconfig:"KAFKA_COMPRESSION" default:"lz4" desc:"none, gzip, snappy, lz4 or zstd"`
	BatchMessages     int           `envconfig:"KAFKA_BATCH_MESSAGES" default:"2000" desc:"messages per produce batch before it is sent"`
	Linger            time.Duration `envconfig:"KAFKA_LINGER" default:"5ms" desc:"how long a produce batch waits to fill"`
	MaxMessageBytes   int           `envconfig:"KAFKA_MAX_MESSAGE_BYTES" default:"1000000" desc:"largest message produced; topics capture creates get it as max.message.bytes"`
	OnPoison          string        `envconfig:"ON_POISON" default:"stop" desc:"a change capture cannot produce (larger than KAFKA_MAX_MESSAGE_BYTES, or a value it cannot decode): stop (stay at that row, not ready, and say why) or dlq (send its key, position and reason to <topic>.dlq and move on)"`
	Delivery          string        `envconfig:"DELIVERY" default:"exactly-once" desc:"exactly-once (Kafka transactions with transactional.id cdcsync-capture-<TOPIC_PREFIX>.<SLOT>: read_committed consumers see every change once and whole Postgres transactions; README: Exactly-once topics) or at-least-once (no transactions: a crash re-sends what was not confirmed, so consumers see duplicates; for brokers without transactions or consumers that read read_uncommitted)"`
	// TransactionTimeout is exactly-once's transaction.timeout.ms: a
	// Kafka transaction holds a whole Postgres transaction, which may be
	// large; the broker's transaction.max.timeout.ms caps it.
	TransactionTimeout time.Duration `envconfig:"KAFKA_TRANSACTION_TIMEOUT" default:"15m" desc:"exactly-once: transaction.timeout.ms of capture's Kafka transactions; a Postgres transaction must reach Kafka within it (at most the broker's transaction.max.timeout.ms, 15m by default)"`
	ShutdownTimeout    time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"8s" desc:"time allowed to flush and confirm on SIGTERM"`
	OutboxPrefix       string        `envconfig:"OUTBOX_PREFIX" default:"cdcsync.outbox" desc:"prefix of the transactional logical decoding messages published as outbox events"`
	OutboxTable        string        `envconfig:"OUTBOX_TABLE" desc:"outbox table schema.table (Debezium outbox columns) whose inserts are published as events; empty disables table mode"`
	OutboxTopicPrefix  string        `envconfig:"OUTBOX_TOPIC_PREFIX" desc:"outbox event topic is <prefix>.<aggregate>; empty means <TOPIC_PREFIX>.events"`

	// TopicCleanupPolicy applies to table topics only (README, Topics and
	// retention).
	TopicCleanupPolicy string `envconfig:"TOPIC_CLEANUP_POLICY" default:"compact" desc:"cleanup.policy of table topics created at start-up: compact (the latest event per key and the tombstones stay, so replay topic --from beginning can rebuild a store) or delete (the broker's retention)"`
	// The nested structs are embedded because envconfig prefixes the
	// variables of a named (non-embedded) struct field with the field name:
	// a field `Kafka Kafka` would read CDCSYNC_KAFKA_KAFKA_BROKERS. Embedded,
	// they read CDCSYNC_KAFKA_BROKERS as DESIGN.md says, and cfg.Kafka.Brokers
	// still works.
	Kafka
	HTTP
	Log
	Encoding
}

// Encoding selects how capture writes keys and values: cdcsync's readable
// encoding, or Debezium's PostgreSQL connector through Kafka Connect's
// JsonConverter, with Debezium's options under their own names.
type Encoding struct {
	Encoding               string `envconfig:"ENCODING" default:"cdcsync" desc:"cdcsync (readable lossless JSON) or debezium (Debezium's PostgreSQL connector records through JsonConverter)"`
	SchemasEnable          bool   `envconfig:"SCHEMAS_ENABLE" default:"true" desc:"debezium encoding: wrap key and value in {\"schema\":…,\"payload\":…} (JsonConverter schemas.enable)"`
	DecimalHandling        string `envconfig:"DECIMAL_HANDLING_MODE" default:"precise" desc:"debezium encoding: numeric and money as precise (Connect Decimal), string or double (decimal.handling.mode)"`
	TimePrecision          string `envconfig:"TIME_PRECISION_MODE" default:"adaptive" desc:"debezium encoding: adaptive, adaptive_time_microseconds or connect (time.precision.mode)"`
	IntervalHandling       string `envconfig:"INTERVAL_HANDLING_MODE" default:"numeric" desc:"debezium encoding: interval as numeric (MicroDuration) or string (ISO 8601) (interval.handling.mode)"`
	BinaryHandling         string `envconfig:"BINARY_HANDLING_MODE" default:"bytes" desc:"debezium encoding: bytea as bytes, base64, base64-url-safe or hex (binary.handling.mode)"`
	HstoreHandling         string `envconfig:"HSTORE_HANDLING_MODE" default:"json" desc:"debezium encoding: hstore as json or map (hstore.handling.mode)"`
	UnavailablePlaceholder string `envconfig:"UNAVAILABLE_VALUE_PLACEHOLDER" default:"__debezium_unavailable_value" desc:"debezium encoding: stands for an unchanged TOASTed value (unavailable.value.placeholder)"`
	TransactionMetadata    bool   `envconfig:"PROVIDE_TRANSACTION_METADATA" default:"false" desc:"add the transaction block to every event and write BEGIN/END records to <prefix>.transaction (provide.transaction.metadata)"`
}

// Inventory names the order columns and statuses the inventory sink derives
// reserved and shipped stock from.
type Inventory struct {
	OrdersTable      string   `envconfig:"ORDERS_TABLE" default:"public.orders" desc:"source table holding orders"`
	OrderIDColumn    string   `envconfig:"ORDER_ID_COLUMN" default:"id" desc:"order primary-key column: the key of the orders events, alone (the sink stops with exit 2 if the events are keyed otherwise)"`
	ItemColumn       string   `envconfig:"ORDER_ITEM_COLUMN" default:"item_id" desc:"order column naming the item"`
	QuantityColumn   string   `envconfig:"ORDER_QUANTITY_COLUMN" default:"quantity" desc:"order column with the quantity"`
	StatusColumn     string   `envconfig:"ORDER_STATUS_COLUMN" default:"status" desc:"order column with the status"`
	ReservedStatuses []string `envconfig:"RESERVED_STATUSES" default:"created,paid" desc:"statuses that reserve stock"`
	ShippedStatuses  []string `envconfig:"SHIPPED_STATUSES" default:"shipped" desc:"statuses that count stock as shipped"`
}

// Sink is the configuration of `cdcsync sink`.
type Sink struct {
	Sinks        []string `envconfig:"SINKS" default:"inventory,redis" desc:"sinks this process runs: inventory, redis or both"`
	InventoryURL string   `envconfig:"INVENTORY_URL" desc:"inventory store, postgres URL (required with the inventory sink)" secret:"url"`
	RedisURL     string   `envconfig:"REDIS_URL" default:"redis://localhost:6379/0" desc:"Redis URL (redis:// or rediss://)" secret:"url"`
	// AvailabilityCache lets an inventory-only deployment run without Redis.
	AvailabilityCache string        `envconfig:"AVAILABILITY_CACHE" default:"on" desc:"on: the inventory sink keeps inventory:available:<item> in Redis at CDCSYNC_REDIS_URL; off: it does not use Redis at all (inventory-only deployments without Redis)"`
	Tables            []string      `envconfig:"TABLES" default:"public.orders" desc:"tables whose topics the redis sink caches"`
	TopicPrefix       string        `envconfig:"TOPIC_PREFIX" default:"cdc" desc:"topic per table: <prefix>.<schema>.<table>"`
	GroupPrefix       string        `envconfig:"GROUP_PREFIX" default:"cdcsync" desc:"consumer group id is <prefix>-<sink>"`
	BatchSize         int           `envconfig:"SINK_BATCH_SIZE" default:"2000" desc:"events applied per database transaction / Redis pipeline"`
	BatchTimeout      time.Duration `envconfig:"SINK_BATCH_TIMEOUT" default:"20ms" desc:"longest wait to fill a batch"`
	DLQSuffix         string        `envconfig:"DLQ_SUFFIX" default:".dlq" desc:"dead-letter topic is <topic><suffix>"`
	// DLQMaxMessageBytes is the dead-letter producer's limit: the
	// original message plus the reason headers must fit under the brokers'
	// message.max.bytes (1048588 by default in Kafka).
	DLQMaxMessageBytes int           `envconfig:"DLQ_MAX_MESSAGE_BYTES" default:"1048576" desc:"largest dead letter written (the original message plus the reason headers); one that would not fit goes without its value (header cdcsync.dlq.omitted)"`
	RetryMax           time.Duration `envconfig:"RETRY_MAX_BACKOFF" default:"10s" desc:"longest backoff between retries of a transient failure"`
	// GroupInstanceID turns on static group membership (Kafka 2.3+).
	GroupInstanceID string        `envconfig:"GROUP_INSTANCE_ID" desc:"static consumer group member id, unique per process: a restarted sink replaces its dead self and gets its partitions back without a rebalance; empty derives it from the host name and the port of CDCSYNC_HTTP_ADDR; - for dynamic membership"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"8s" desc:"time allowed to finish the batch being applied on SIGTERM or a rebalance"`

	// TombstoneRetention bounds how long the sinks keep what deleted rows
	// leave behind (README, Inventory store and availability).
	TombstoneRetention time.Duration `envconfig:"TOMBSTONE_RETENTION" default:"0s" desc:"how long the sinks keep the tombstones of deleted rows (inventory projection rows, Redis cdcver: keys), which make a late older event of a deleted row stale; 0 uses the topics' delete.retention.ms (Kafka's default 24h), after which a compacted topic drops the row's delete too"`
	// Embedded for the variable names; see Capture.
	Inventory
	Kafka
	HTTP
	Log
}

// DevBroker is the configuration of `cdcsync dev-broker`, an in-process
// Kafka-protocol broker (kfake) for development and demos only.
type DevBroker struct {
	Addr       string   `envconfig:"DEV_BROKER_ADDR" default:"127.0.0.1:9092" desc:"listen address of the development broker (also the address it advertises)"`
	DataDir    string   `envconfig:"DEV_BROKER_DATA_DIR" desc:"directory that keeps records across restarts; empty keeps them in memory only"`
	Topics     []string `envconfig:"DEV_BROKER_TOPICS" desc:"topics to create at start-up, comma-separated name or name:partitions"`
	Partitions int32    `envconfig:"DEV_BROKER_PARTITIONS" default:"4" desc:"partitions of topics created without an explicit count (and of auto-created topics)"`
	Log
}

// Status is the configuration of `cdcsync status`: where the pipeline's
// progress is kept (the slot, the topics, the sinks' consumer groups).
type Status struct {
	SourceURL    string   `envconfig:"SOURCE_URL" required:"true" desc:"order database (holds the replication slot), postgres URL" secret:"url"`
	Slot         string   `envconfig:"SLOT" default:"cdcsync" desc:"logical replication slot capture uses"`
	Tables       []string `envconfig:"TABLES" default:"public.orders" desc:"captured tables: their topics are reported, and the redis sink consumes them"`
	OrdersTable  string   `envconfig:"ORDERS_TABLE" default:"public.orders" desc:"orders table: the inventory sink consumes its topic"`
	TopicPrefix  string   `envconfig:"TOPIC_PREFIX" default:"cdc" desc:"topic per table: <prefix>.<schema>.<table>"`
	GroupPrefix  string   `envconfig:"GROUP_PREFIX" default:"cdcsync" desc:"consumer group id of a sink is <prefix>-<sink>"`
	Sinks        []string `envconfig:"SINKS" default:"inventory,redis" desc:"sinks whose consumer lag is reported"`
	InventoryURL string   `envconfig:"INVENTORY_URL" desc:"inventory store, postgres URL: its applied-through position is reported; empty leaves it out" secret:"url"`
	RedisURL     string   `envconfig:"REDIS_URL" desc:"Redis URL: the caches' applied-through positions are reported; empty leaves them out" secret:"url"`
	StateSchema  string   `envconfig:"STATE_SCHEMA" default:"cdcsync" desc:"schema of capture's state: backfills and the initial snapshot's progress are reported from it, and it tells a lost slot (capture recorded it) from one never created"`
	// Embedded for the variable names; see Capture.
	Kafka
}

// Verify is the configuration of `cdcsync verify`. The slot, topic and
// group settings are only used by --wait, which waits for the pipeline
// to catch up first (see Status).
type Verify struct {
	SourceURL         string        `envconfig:"SOURCE_URL" required:"true" desc:"order database, postgres URL" secret:"url"`
	InventoryURL      string        `envconfig:"INVENTORY_URL" desc:"inventory store, postgres URL (required when CDCSYNC_SINKS includes inventory)" secret:"url"`
	RedisURL          string        `envconfig:"REDIS_URL" default:"redis://localhost:6379/0" desc:"Redis URL (redis:// or rediss://); empty skips the availability cache when only the inventory sink is checked" secret:"url"`
	AvailabilityCache string        `envconfig:"AVAILABILITY_CACHE" default:"on" desc:"on: compare the availability cache too (with the inventory sink); off: the deployment runs without it"`
	Sinks             []string      `envconfig:"SINKS" default:"inventory,redis" desc:"sinks whose stores are compared: inventory (inventory_items and the availability cache), redis (the row cache)"`
	Tables            []string      `envconfig:"TABLES" default:"public.orders" desc:"tables whose row cache is compared (and whose topics --wait watches)"`
	Slot              string        `envconfig:"SLOT" default:"cdcsync" desc:"logical replication slot capture uses (for --wait)"`
	TopicPrefix       string        `envconfig:"TOPIC_PREFIX" default:"cdc" desc:"topic per table: <prefix>.<schema>.<table> (for --wait)"`
	GroupPrefix       string        `envconfig:"GROUP_PREFIX" default:"cdcsync" desc:"consumer group id of a sink is <prefix>-<sink> (for --wait)"`
	StateSchema       string        `envconfig:"STATE_SCHEMA" default:"cdcsync" desc:"capture's state schema (for --wait: an unfinished initial snapshot is waited for)"`
	MaxReport         int           `envconfig:"VERIFY_MAX_REPORT" default:"20" desc:"drifted items or keys listed per check; the counts are always complete"`
	CutWait           time.Duration `envconfig:"VERIFY_CUT_WAIT" default:"30s" desc:"while the sinks keep applied-through positions, verify compares at a consistent cut: it waits this long for every sink to apply the cut's LSN (an error when one does not); 0 compares without a cut"`
	// Embedded for the variable names; see Capture.
	Inventory
	Kafka
}

// StatusConfig returns the settings `verify --wait` watches the pipeline
// with.
func (v Verify) StatusConfig() Status {
	return Status{
		SourceURL: v.SourceURL, Slot: v.Slot, Tables: v.Tables, OrdersTable: v.OrdersTable,
		TopicPrefix: v.TopicPrefix, GroupPrefix: v.GroupPrefix, Sinks: v.Sinks,
		StateSchema: v.StateSchema, // verify --wait waits for the initial snapshot; it judges no slot
		Kafka:       v.Kafka,
	}
}

// Demo is the configuration of `cdcsync demo`, the one-command local run.
// Everything else (services, ports, URLs) the demo sets up for itself.
type Demo struct {
	Duration time.Duration `envconfig:"DEMO_DURATION" default:"0s" desc:"how long the demo runs before it stops by itself (also --duration); 0 runs until Ctrl-C"`
	Rate     int           `envconfig:"DEMO_RATE" default:"200" desc:"order writes per second of the generator (creates, payments, shipments, cancellations, changes, deletes)"`
	Items    int           `envconfig:"DEMO_ITEMS" default:"1000" desc:"items in the demo inventory, each stocked before the sinks start"`
	Log
}

// derivedDefaults turns read-your-writes watermarks off under the debezium
// encoding unless CDCSYNC_WATERMARK_INTERVAL asks for them: watermarks are
// null-valued records with cdcsync's own keys, which a Debezium consumer
// (the JDBC sink deleting by key, say) would take for a delete of a row.
func (c *Capture) derivedDefaults(isSet func(name string) bool) {
	if c.Encoding.Encoding == "debezium" && !isSet("WATERMARK_INTERVAL") {
		c.WatermarkInterval = 0
	}
}

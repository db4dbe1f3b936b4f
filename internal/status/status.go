// Package status reports how far the pipeline has got: the replication
// slot's confirmed position against the source's WAL, the end offsets of
// the change topics, and each sink's committed offsets and lag. `cdcsync
// status` prints it, `cdcsync verify --wait` and the demo poll it.
package status

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/kafkaclient"
	"github.com/cdcsync/cdcsync/pipeline"
)

// Report is the pipeline's progress at one moment.
type Report struct {
	Slot Slot `json:"slot"`
	// Delivery is capture's delivery mode and, exactly once, its
	// checkpoint.
	Delivery Delivery `json:"delivery"`
	Topics   []Topic  `json:"topics"`
	Sinks    []Sink   `json:"sinks"`
	// Backfills lists capture's backfills that are not done, the initial
	// snapshot's among them (backfill.go).
	Backfills []Backfill `json:"backfills"`
}

// Slot is the replication slot capture reads from.
type Slot struct {
	Name   string `json:"name"`
	Exists bool   `json:"exists"`
	Active bool   `json:"active"`
	// ActivePID is the backend serving the slot's connection, if any.
	ActivePID *int32 `json:"active_pid"`
	// ConfirmedLSN is the position capture confirmed (everything before
	// it is on Kafka); CurrentLSN the source's current WAL position.
	ConfirmedLSN string `json:"confirmed_flush_lsn"`
	CurrentLSN   string `json:"current_wal_lsn"`
	// LagBytes is the WAL between them: what capture has still to read
	// or to have acknowledged by Kafka.
	LagBytes int64 `json:"lag_bytes"`
	// WALStatus is pg_replication_slots.wal_status (reserved, extended,
	// unreserved, lost); empty when the slot does not exist.
	WALStatus string `json:"wal_status,omitempty"`
	// Lost is set when the slot can no longer deliver every change:
	// slot_missing (capture recorded the slot, the server does not have it:
	// a failover or restore), slot_invalidated (wal_status lost, or an
	// invalidation reason), or source_changed (another cluster than the
	// one capture recorded). LostDetail says more. Capture refuses to
	// continue over it (README: When the order database fails over).
	Lost       string `json:"lost,omitempty"`
	LostDetail string `json:"lost_detail,omitempty"`
	// SourceEpoch is the slot's source epoch (0 until a slot was lost
	// and created again).
	SourceEpoch uint32 `json:"source_epoch,omitempty"`
	// Recovering is set while capture re-reads every table after a lost
	// slot and the resnapshot-done records are not on Kafka yet
	// ("re-snapshot after lost slot, N/M rows"): the topics are not
	// exact until then, and capture's /readyz says so.
	Recovering string `json:"recovering,omitempty"`
}

// Streaming reports whether capture holds the slot and the slot has its
// consistent point: every transaction that commits from now on reaches
// Kafka. While CREATE_REPLICATION_SLOT waits for running transactions
// the slot already exists and is active, but what commits then is in no
// stream; only table rows reach Kafka (through the initial snapshot),
// logical messages such as outbox events never do.
func (s Slot) Streaming() bool {
	return s.Exists && s.Active && s.ConfirmedLSN != ""
}

// Topic is one change topic and its partitions' offsets.
type Topic struct {
	Name       string      `json:"name"`
	Exists     bool        `json:"exists"`
	Partitions []Partition `json:"partitions"`
}

// Partition holds the offsets of one partition: Start is the first
// offset still kept, End the offset the next record will get.
type Partition struct {
	Partition int32 `json:"partition"`
	Start     int64 `json:"start_offset"`
	End       int64 `json:"end_offset"`
}

// Records is the number of offsets a topic holds (End - Start, summed):
// its records, plus on an exactly-once topic one transaction marker per
// Kafka transaction and the records of aborted ones.
func (t Topic) Records() int64 {
	var n int64
	for _, p := range t.Partitions {
		n += p.End - p.Start
	}
	return n
}

// End sums the partitions' end offsets (last stable offsets): the number
// of records ever written to the topic at least once; on an exactly-once
// topic transaction markers and aborted records take offsets too, so it
// is no count of records.
func (t Topic) End() int64 {
	var n int64
	for _, p := range t.Partitions {
		n += p.End
	}
	return n
}

// Sink is one sink's consumer group and its lag.
type Sink struct {
	Name  string `json:"name"`
	Group string `json:"group"`
	// Lag is the sum of the partitions' lag.
	Lag        int64           `json:"lag"`
	Partitions []SinkPartition `json:"partitions"`
	// Applied are the applied-through positions of the sink's stores
	// whose URLs are configured (CDCSYNC_INVENTORY_URL, CDCSYNC_REDIS_URL).
	Applied []Applied `json:"applied,omitempty"`
}

// SinkPartition is a sink's position in one partition.
type SinkPartition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Committed is the group's committed offset (the next record it
	// will read), nil when it has committed none: the sink then starts at
	// the oldest record.
	Committed *int64 `json:"committed_offset"`
	End       int64  `json:"end_offset"`
	// Lag is how many records the sink has still to apply.
	Lag int64 `json:"lag"`
}

// CaughtUp reports whether the slot has no lag, the initial snapshot is
// complete and no sink has records left to apply.
func (r *Report) CaughtUp() bool {
	if !r.Slot.Exists || r.Slot.LagBytes > 0 {
		return false
	}
	for _, b := range r.Backfills {
		if b.Initial && b.Unfinished() {
			return false
		}
	}
	for _, s := range r.Sinks {
		if s.Lag > 0 {
			return false
		}
	}
	return true
}

// Collector reads the pipeline's progress. It keeps its connections, so
// that polling is cheap; Close releases them.
type Collector struct {
	cfg    config.Status
	pool   *pgxpool.Pool
	client sarama.Client
	admin  sarama.ClusterAdmin
	stores *appliedStores
	// sinkTopics are the topics each selected sink consumes, in the order
	// of cfg.Sinks.
	sinkTopics map[string][]string
	topics     []string // every topic to report, in order, once
}

// New connects to the source database and the Kafka brokers. cfg must be
// valid (config.Load validates it).
func New(ctx context.Context, cfg config.Status) (*Collector, error) {
	c := &Collector{cfg: cfg, sinkTopics: map[string][]string{}}
	seen := map[string]bool{}
	add := func(t string) {
		if !seen[t] {
			seen[t] = true
			c.topics = append(c.topics, t)
		}
	}
	for _, t := range cfg.Tables {
		add(tableTopic(cfg.TopicPrefix, t))
	}
	add(tableTopic(cfg.TopicPrefix, cfg.OrdersTable))
	for _, s := range cfg.Sinks {
		switch s {
		case config.SinkInventory:
			// The inventory sink consumes the orders table's topic
			// (sink.Run).
			c.sinkTopics[s] = []string{tableTopic(cfg.TopicPrefix, cfg.OrdersTable)}
		case config.SinkRedis:
			for _, t := range cfg.Tables {
				c.sinkTopics[s] = append(c.sinkTopics[s], tableTopic(cfg.TopicPrefix, t))
			}
		}
	}

	pcfg, err := pgxpool.ParseConfig(cfg.SourceURL)
	if err != nil {
		return nil, &config.Error{Var: config.Prefix + "_SOURCE_URL", Problem: "is not a usable postgres connection string"}
	}
	pcfg.MaxConns = 2
	c.pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("source database: %w", err)
	}
	sc, err := kafkaclient.Config(cfg.Kafka)
	if err != nil {
		c.pool.Close()
		return nil, err
	}
	sc.Metadata.AllowAutoTopicCreation = false
	// A topic that does not exist yet is normal here (capture not started);
	// sarama's default retries would make every report of it slow.
	sc.Metadata.Retry.Max = 1
	sc.Metadata.Retry.Backoff = 100 * time.Millisecond
	c.client, err = kafkaclient.NewClient(cfg.Kafka, sc)
	if err != nil {
		c.pool.Close()
		return nil, err
	}
	c.admin, err = sarama.NewClusterAdminFromClient(c.client)
	if err != nil {
		_ = c.client.Close()
		c.pool.Close()
		return nil, fmt.Errorf("kafka admin: %w", err)
	}
	if c.stores, err = openAppliedStores(ctx, cfg); err != nil {
		_ = c.admin.Close()
		c.pool.Close()
		return nil, err
	}
	return c, nil
}

// tableTopic is the change topic of "schema.table" (validated already).
func tableTopic(prefix, table string) string {
	schema, name, _ := strings.Cut(table, ".")
	return pipeline.Topic(prefix, schema, name)
}

// Close releases the connections.
func (c *Collector) Close() error {
	err := c.admin.Close() // closes the client too
	c.pool.Close()
	c.stores.close()
	if errors.Is(err, sarama.ErrClosedClient) {
		err = nil
	}
	return err
}

// Collect reads the slot, the topics' offsets and the sinks' lag.
func (c *Collector) Collect(ctx context.Context) (*Report, error) {
	slot, err := c.slot(ctx)
	if err != nil {
		return nil, err
	}
	r := &Report{Slot: slot}
	if r.Backfills, err = c.backfills(ctx); err != nil {
		return nil, err
	}
	if r.Delivery, err = c.delivery(ctx); err != nil {
		return nil, err
	}
	byName := map[string]Topic{}
	for _, name := range c.topics {
		t, err := c.Topic(ctx, name)
		if err != nil {
			return nil, err
		}
		byName[name] = t
		r.Topics = append(r.Topics, t)
	}
	lsn, _ := pglogrepl.ParseLSN(slot.CurrentLSN)
	current := c.sourcePosition(ctx, lsn)
	now := time.Now()
	for _, s := range c.cfg.Sinks {
		sink, err := c.sink(ctx, s, byName)
		if err != nil {
			return nil, err
		}
		sink.Applied = c.stores.read(ctx, s, current, now)
		r.Sinks = append(r.Sinks, sink)
	}
	return r, ctx.Err()
}

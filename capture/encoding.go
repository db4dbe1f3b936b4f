package capture

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
	"github.com/cdcsync/cdcsync/pipeline/debezium"
)

// recordEncoder turns a change of a captured table into the Record for its
// topic. The default encoding is tableRecord; CDCSYNC_ENCODING=debezium
// swaps in debeziumRecords, so the default path pays nothing for it.
type recordEncoder interface {
	record(c Change) (Record, error)
	// relationChanged says a Relation message redefined schema.table: its
	// columns or their types may have changed.
	relationChanged(schema, table string)
}

// cdcsyncRecords is the default encoding.
type cdcsyncRecords struct{ prefix string }

func (r cdcsyncRecords) record(c Change) (Record, error) { return tableRecord(r.prefix, c), nil }
func (cdcsyncRecords) relationChanged(string, string)    {}

// newRecordEncoder returns the encoding cfg selects. The Debezium encoding
// reads the captured tables' column types from the catalog now, and again
// for a table whose definition changes while streaming.
func newRecordEncoder(cfg config.Capture, connect func(context.Context) (*pgx.Conn, error), tables []tableInfo) (recordEncoder, error) {
	if cfg.Encoding.Encoding != "debezium" {
		return cdcsyncRecords{prefix: cfg.TopicPrefix}, nil
	}
	d := &debeziumRecords{
		prefix:  cfg.TopicPrefix,
		enc:     debezium.NewEncoder(DebeziumConfig(cfg.Encoding)),
		connect: connect,
		keys:    map[string][]string{},
		stale:   map[string]bool{},
	}
	for _, t := range tables {
		d.keys[t.Schema+"."+t.Name] = t.Key
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, t := range tables {
		if err := d.load(ctx, t.Schema, t.Name); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// DebeziumConfig maps the CDCSYNC_ settings to the encoder's options.
func DebeziumConfig(e config.Encoding) debezium.Config {
	return debezium.Config{
		SchemasEnable:    e.SchemasEnable,
		DecimalHandling:  e.DecimalHandling,
		TimePrecision:    e.TimePrecision,
		IntervalHandling: e.IntervalHandling,
		BinaryHandling:   e.BinaryHandling,
		HstoreHandling:   e.HstoreHandling,
		Placeholder:      e.UnavailablePlaceholder,
	}
}

// debeziumRecords is CDCSYNC_ENCODING=debezium.
type debeziumRecords struct {
	prefix  string
	enc     *debezium.Encoder
	connect func(context.Context) (*pgx.Conn, error)
	keys    map[string][]string // "schema.table" -> key columns
	mu      sync.Mutex          // guards stale: the snapshot and stream may both encode
	stale   map[string]bool
}

func (d *debeziumRecords) relationChanged(schema, table string) {
	d.mu.Lock()
	d.stale[schema+"."+table] = true
	d.mu.Unlock()
}

func (d *debeziumRecords) load(ctx context.Context, schema, table string) error {
	conn, err := d.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	t, err := debezium.LoadTable(ctx, conn, schema, table, d.keys[schema+"."+table])
	if err != nil {
		return err
	}
	d.enc.SetTable(d.prefix, t)
	return nil
}

func (d *debeziumRecords) record(c Change) (Record, error) {
	rec := tableRecord(d.prefix, c)
	if err := d.fresh(c); err != nil {
		return rec, err
	}
	if c.Key != nil {
		key, err := d.enc.Key(c.Schema, c.Table, c.Key)
		if err != nil {
			return rec, err
		}
		rec.Key = key
	}
	if c.Event == nil {
		return rec, nil // Debezium's tombstone: the key, a null value
	}
	value, err := d.enc.Value(c.Event)
	if err != nil {
		return rec, err
	}
	rec.Value = value
	if len(c.Event.Unchanged) > 0 {
		// The placeholder is configurable: tell the sinks exactly which
		// columns carry it.
		names, err := json.Marshal(c.Event.Unchanged)
		if err != nil {
			return rec, fmt.Errorf("debezium encoding: unchanged columns: %w", err)
		}
		rec.Headers = append(rec.Headers, sarama.RecordHeader{Key: headerUnchanged, Value: names})
	}
	return rec, nil
}

// fresh reloads a table's columns when its definition changed or the
// change names a column the encoder does not know (added by DDL).
func (d *debeziumRecords) fresh(c Change) error {
	name := c.Schema + "." + c.Table
	d.mu.Lock()
	stale := d.stale[name]
	delete(d.stale, name)
	d.mu.Unlock()
	if !stale && d.enc.HasTable(c.Schema, c.Table) && (c.Event == nil ||
		(d.enc.Columns(c.Schema, c.Table, c.Event.After) && d.enc.Columns(c.Schema, c.Table, c.Event.Before))) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.load(ctx, c.Schema, c.Table); err != nil {
		return fmt.Errorf("debezium encoding of %s: %w", name, err)
	}
	return nil
}

var headerUnchanged = []byte(debezium.HeaderUnchanged)

// txMetadata follows the stream's transactions for
// CDCSYNC_PROVIDE_TRANSACTION_METADATA: it numbers each streamed event
// (the transaction block) and makes the BEGIN and END records, as
// Debezium's TransactionMonitor does: BEGIN before a transaction's first
// captured event, END at its commit, none for a transaction without one.
type txMetadata struct {
	topic   string
	schemas bool

	active bool
	xid    uint32
	commit pglogrepl.LSN
	id     string
	tsMs   int64
	total  int64
	counts []debezium.TxCollection
}

// observe numbers a streamed table change and returns the BEGIN record to
// produce before it when it opens a transaction.
func (m *txMetadata) observe(c Change) (Record, bool) {
	ev := c.Event
	if ev == nil || ev.Source.Snapshot != "false" {
		return Record{}, false // tombstones, snapshot and backfill rows have no block
	}
	var begin Record
	opened := false
	if !m.active || m.xid != ev.Source.TxID || m.commit != c.Position.Commit {
		*m = txMetadata{topic: m.topic, schemas: m.schemas, active: true, xid: ev.Source.TxID,
			commit: c.Position.Commit, tsMs: ev.Source.TsMs,
			id: strconv.FormatUint(uint64(ev.Source.TxID), 10) + ":" + strconv.FormatUint(uint64(c.Position.Commit), 10)}
		begin = m.txRecord(debezium.TxRecord{Status: debezium.TxBegin, ID: m.id, TsMs: m.tsMs}, c.Position)
		opened = true
	}
	name := c.Schema + "." + c.Table
	i := 0
	for i < len(m.counts) && m.counts[i].Name != name {
		i++
	}
	if i == len(m.counts) {
		m.counts = append(m.counts, debezium.TxCollection{Name: name})
	}
	m.total++
	m.counts[i].Count++
	ev.Transaction = &pipeline.Transaction{ID: m.id, TotalOrder: m.total, DataCollectionOrder: m.counts[i].Count}
	return begin, opened
}

// end returns the END record of the transaction committing at commit, if
// it had captured events.
func (m *txMetadata) end(commit pglogrepl.LSN) (Record, bool) {
	if !m.active || m.commit != commit {
		return Record{}, false
	}
	rec := m.txRecord(debezium.TxRecord{Status: debezium.TxEnd, ID: m.id, Collections: m.counts, TsMs: m.tsMs},
		pipeline.Position{Commit: commit, Change: commit})
	*m = txMetadata{topic: m.topic, schemas: m.schemas}
	return rec, true
}

func (m *txMetadata) txRecord(r debezium.TxRecord, pos pipeline.Position) Record {
	return Record{
		Topic:    m.topic,
		Key:      r.Key(m.schemas),
		Value:    r.Value(m.schemas),
		Position: pos,
		Headers:  []sarama.RecordHeader{{Key: headerPosition, Value: pos.AppendText(nil)}},
	}
}

// newTxMetadata returns the transaction follower cfg asks for, or nil.
func newTxMetadata(cfg config.Capture) *txMetadata {
	if !cfg.Encoding.TransactionMetadata {
		return nil
	}
	return &txMetadata{topic: debezium.TransactionTopic(cfg.TopicPrefix),
		schemas: cfg.Encoding.Encoding == "debezium" && cfg.Encoding.SchemasEnable}
}

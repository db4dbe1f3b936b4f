package debezium

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/cdcsync/cdcsync/pipeline"
)

// Version is the Debezium release whose record format this package
// follows; it is what source.version says.
const Version = pipeline.DebeziumVersion

// DefaultPlaceholder is Debezium's unavailable.value.placeholder default.
const DefaultPlaceholder = "__debezium_unavailable_value"

// Config selects Debezium's options; the field comments name them.
type Config struct {
	// SchemasEnable wraps key and value in {"schema":…,"payload":…}
	// (JsonConverter's schemas.enable).
	SchemasEnable bool
	// DecimalHandling: precise, string or double (decimal.handling.mode).
	DecimalHandling string
	// TimePrecision: adaptive, adaptive_time_microseconds or connect
	// (time.precision.mode).
	TimePrecision string
	// IntervalHandling: numeric or string (interval.handling.mode).
	IntervalHandling string
	// BinaryHandling: bytes, base64, base64-url-safe or hex
	// (binary.handling.mode).
	BinaryHandling string
	// HstoreHandling: json or map (hstore.handling.mode).
	HstoreHandling string
	// Placeholder replaces unchanged TOASTed values
	// (unavailable.value.placeholder).
	Placeholder string
}

// DefaultConfig is Debezium's defaults.
func DefaultConfig() Config {
	return Config{SchemasEnable: true, DecimalHandling: "precise", TimePrecision: "adaptive",
		IntervalHandling: "numeric", BinaryHandling: "bytes", HstoreHandling: "json", Placeholder: DefaultPlaceholder}
}

// Encoder turns events of known tables into Debezium's key and value bytes.
// It is safe for concurrent use.
type Encoder struct {
	cfg    Config
	mu     sync.RWMutex
	tables map[string]*tableCodec
}

// tableCodec is one table's plans and pre-rendered schemas.
type tableCodec struct {
	table     Table
	plans     []*plan // table order; kOmit plans are left out of the record
	keyPlans  []*plan
	keyHead   []byte // `{"schema":…,"payload":` or empty without schemas
	valueHead []byte
}

// NewEncoder returns an encoder; tables are added with SetTable.
func NewEncoder(cfg Config) *Encoder {
	if cfg.Placeholder == "" {
		cfg.Placeholder = DefaultPlaceholder
	}
	return &Encoder{cfg: cfg, tables: map[string]*tableCodec{}}
}

// Config returns the encoder's configuration.
func (e *Encoder) Config() Config { return e.cfg }

// SetTable (re)defines a table's columns; prefix is the topic prefix
// (Debezium's topic.prefix), which names the schemas.
func (e *Encoder) SetTable(prefix string, t Table) {
	tc := &tableCodec{table: t}
	byName := map[string]*plan{}
	value := &schema{typ: "struct", optional: true, name: pipeline.Topic(prefix, t.Schema, t.Name) + ".Value"}
	for _, c := range t.Columns {
		p := e.cfg.planTableColumn(c)
		if p.kind == kOmit {
			continue
		}
		tc.plans = append(tc.plans, p)
		byName[c.Name] = p
		value.fields = append(value.fields, field{c.Name, p.schema})
	}
	key := &schema{typ: "struct", name: pipeline.Topic(prefix, t.Schema, t.Name) + ".Key"}
	for _, k := range t.Key {
		if p := byName[k]; p != nil {
			kp := *p
			ks := *p.schema
			ks.optional = false
			kp.schema = &ks
			tc.keyPlans = append(tc.keyPlans, &kp)
			key.fields = append(key.fields, field{k, &ks})
		}
	}
	if e.cfg.SchemasEnable {
		tc.keyHead = append(key.appendJSON([]byte(`{"schema":`), ""), `,"payload":`...)
		env := envelopeSchema(pipeline.Topic(prefix, t.Schema, t.Name), value)
		tc.valueHead = append(env.appendJSON([]byte(`{"schema":`), ""), `,"payload":`...)
	}
	e.mu.Lock()
	e.tables[t.Schema+"."+t.Name] = tc
	e.mu.Unlock()
}

// HasTable reports whether the table was defined.
func (e *Encoder) HasTable(schemaName, table string) bool {
	_, ok := e.table(schemaName, table)
	return ok
}

// Columns reports whether every column named is one the encoder knows for
// the table (a column added by DDL since SetTable is not).
func (e *Encoder) Columns(schemaName, table string, row pipeline.Row) bool {
	tc, ok := e.table(schemaName, table)
	if !ok {
		return false
	}
	for _, c := range row {
		found := false
		for _, col := range tc.table.Columns {
			if col.Name == c.Name {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (e *Encoder) table(schemaName, table string) (*tableCodec, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	tc, ok := e.tables[schemaName+"."+table]
	return tc, ok
}

// Key encodes a key row; nil for a nil key (truncate).
func (e *Encoder) Key(schemaName, table string, key pipeline.Row) ([]byte, error) {
	if key == nil {
		return nil, nil
	}
	tc, ok := e.table(schemaName, table)
	if !ok {
		return nil, fmt.Errorf("debezium key: table %s.%s is not known", schemaName, table)
	}
	buf := append(make([]byte, 0, len(tc.keyHead)+64), tc.keyHead...)
	buf = append(buf, '{')
	for i, p := range tc.keyPlans {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJacksonString(buf, p.name)
		buf = append(buf, ':')
		v, _ := key.Get(p.name)
		var err error
		if buf, err = e.cfg.appendValue(buf, p, v); err != nil {
			return nil, fmt.Errorf("debezium key of %s.%s, column %q: %w", schemaName, table, p.name, err)
		}
	}
	buf = append(buf, '}')
	if len(tc.keyHead) > 0 {
		buf = append(buf, '}')
	}
	return buf, nil
}

// Value encodes an event's envelope.
func (e *Encoder) Value(ev *pipeline.Event) ([]byte, error) {
	s := &ev.Source
	tc, ok := e.table(s.Schema, s.Table)
	if !ok {
		return nil, fmt.Errorf("debezium value: table %s.%s is not known", s.Schema, s.Table)
	}
	buf := append(make([]byte, 0, len(tc.valueHead)+512), tc.valueHead...)
	buf = append(buf, `{"before":`...)
	var err error
	if buf, err = e.appendRow(buf, tc, ev.Before, nil); err != nil {
		return nil, fmt.Errorf("debezium value of %s.%s, before: %w", s.Schema, s.Table, err)
	}
	buf = append(buf, `,"after":`...)
	if buf, err = e.appendRow(buf, tc, ev.After, ev.Unchanged); err != nil {
		return nil, fmt.Errorf("debezium value of %s.%s, after: %w", s.Schema, s.Table, err)
	}
	buf = append(buf, `,"source":`...)
	buf = AppendSource(buf, s)
	buf = append(buf, `,"transaction":`...)
	buf = ev.Transaction.AppendJSON(buf)
	buf = append(buf, `,"op":`...)
	buf = appendJacksonString(buf, string(ev.Op))
	ns := ev.TsNs
	if ns == 0 {
		ns = ev.TsMs * 1_000_000
	}
	buf = append(buf, `,"ts_ms":`...)
	buf = strconv.AppendInt(buf, ev.TsMs, 10)
	buf = append(buf, `,"ts_us":`...)
	buf = strconv.AppendInt(buf, ns/1000, 10)
	buf = append(buf, `,"ts_ns":`...)
	buf = strconv.AppendInt(buf, ns, 10)
	buf = append(buf, '}')
	if len(tc.valueHead) > 0 {
		buf = append(buf, '}')
	}
	return buf, nil
}

// appendRow writes a row with every column of the table in table order:
// columns the row lacks are null, unless named in unchanged (TOASTed and
// not sent), which get the placeholder.
func (e *Encoder) appendRow(buf []byte, tc *tableCodec, row pipeline.Row, unchanged []string) ([]byte, error) {
	if row == nil {
		return append(buf, "null"...), nil
	}
	buf = append(buf, '{')
	for i, p := range tc.plans {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJacksonString(buf, p.name)
		buf = append(buf, ':')
		v, ok := row.Get(p.name)
		if !ok && contains(unchanged, p.name) {
			buf = e.appendPlaceholder(buf, p)
			continue
		}
		var err error
		if buf, err = e.cfg.appendValue(buf, p, v); err != nil {
			return buf, fmt.Errorf("column %q: %w", p.name, err)
		}
	}
	return append(buf, '}'), nil
}

// appendPlaceholder writes Debezium's stand-in for an unchanged TOASTed
// value of p's type (UnchangedToastedPlaceholder).
func (e *Encoder) appendPlaceholder(buf []byte, p *plan) []byte {
	ph := e.cfg.Placeholder
	switch p.holder {
	case holdString:
		return appendJacksonString(buf, ph)
	case holdBytes:
		return appendBytesB64(buf, []byte(ph))
	case holdStringList:
		buf = append(buf, '[')
		buf = appendJacksonString(buf, ph)
		return append(buf, ']')
	case holdHstoreJSON, holdHstoreMap:
		obj := appendHstoreObject(nil, []string{ph}, []*string{&ph})
		if p.holder == holdHstoreMap {
			return append(buf, obj...)
		}
		return appendJacksonString(buf, string(obj))
	case holdIntList:
		buf = append(buf, '[')
		for i := 0; i < len(ph); i++ {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = strconv.AppendInt(buf, int64(int8(ph[i])), 10)
		}
		return append(buf, ']')
	}
	return append(buf, "null"...)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// AppendSource appends the source block with Debezium's fields in its
// order (SourceInfoTest.schemaIsCorrect).
func AppendSource(buf []byte, s *pipeline.Source) []byte {
	buf = append(buf, `{"version":`...)
	buf = appendJacksonString(buf, Version)
	buf = append(buf, `,"connector":"postgresql","name":`...)
	buf = appendJacksonString(buf, s.Name)
	buf = append(buf, `,"ts_ms":`...)
	buf = strconv.AppendInt(buf, s.TsMs, 10)
	buf = append(buf, `,"snapshot":`...)
	buf = appendJacksonString(buf, s.Snapshot)
	buf = append(buf, `,"db":`...)
	buf = appendJacksonString(buf, s.DB)
	buf = append(buf, `,"sequence":`...)
	buf = appendJacksonString(buf, string(pipeline.AppendSequence(nil, s)))
	us := s.TsUs
	if us == 0 {
		us = s.TsMs * 1000
	}
	buf = append(buf, `,"ts_us":`...)
	buf = strconv.AppendInt(buf, us, 10)
	buf = append(buf, `,"ts_ns":`...)
	buf = strconv.AppendInt(buf, us*1000, 10)
	buf = append(buf, `,"schema":`...)
	buf = appendJacksonString(buf, s.Schema)
	buf = append(buf, `,"table":`...)
	buf = appendJacksonString(buf, s.Table)
	buf = append(buf, `,"txId":`...)
	if s.TxID == 0 {
		buf = append(buf, "null"...)
	} else {
		buf = strconv.AppendUint(buf, uint64(s.TxID), 10)
	}
	buf = append(buf, `,"lsn":`...)
	buf = strconv.AppendUint(buf, s.LSN, 10)
	return append(buf, `,"xmin":null}`...)
}

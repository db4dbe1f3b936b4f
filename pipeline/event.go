package pipeline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
)

// Op is the Debezium operation code of an event.
type Op string

// Operation codes, as Debezium writes them.
const (
	OpCreate   Op = "c"
	OpUpdate   Op = "u"
	OpDelete   Op = "d"
	OpRead     Op = "r" // snapshot or backfill row
	OpTruncate Op = "t"
)

// Valid reports whether o is one of the known operation codes.
func (o Op) Valid() bool {
	switch o {
	case OpCreate, OpUpdate, OpDelete, OpRead, OpTruncate:
		return true
	}
	return false
}

// Column is one column of a row with its value already encoded as JSON.
type Column struct {
	Name  string
	Value json.RawMessage
}

// Row is a row's columns in table order. A nil Row encodes as JSON null.
// Keeping the order (rather than a map) makes the encoding stable and cheap.
type Row []Column

// Get returns the JSON value of the named column and whether it is present.
func (r Row) Get(name string) (json.RawMessage, bool) {
	for _, c := range r {
		if c.Name == name {
			return c.Value, true
		}
	}
	return nil, false
}

// AppendJSON appends r as a JSON object (or null) to buf.
func (r Row) AppendJSON(buf []byte) []byte {
	if r == nil {
		return append(buf, "null"...)
	}
	buf = append(buf, '{')
	for i, c := range r {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = AppendString(buf, c.Name)
		buf = append(buf, ':')
		if len(c.Value) == 0 {
			buf = append(buf, "null"...)
		} else {
			buf = append(buf, c.Value...)
		}
	}
	return append(buf, '}')
}

// MarshalJSON implements json.Marshaler.
func (r Row) MarshalJSON() ([]byte, error) { return r.AppendJSON(nil), nil }

// UnmarshalJSON reads a JSON object keeping the order of its members.
// encoding/json validates the whole document before calling it, so it
// only finds the members' boundaries (a json.Decoder per row made decoding
// the sinks' main cost); input that is not well-formed gives an error.
func (r *Row) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if bytes.Equal(data, []byte("null")) {
		*r = nil
		return nil
	}
	if len(data) < 2 || data[0] != '{' || data[len(data)-1] != '}' {
		return errors.New("row: not a JSON object")
	}
	// The values slice into data; json.Unmarshaler must not keep the
	// caller's buffer, so keep one copy per row.
	data = bytes.Clone(data)
	row := make(Row, 0, 8)
	i := skipSpace(data, 1)
	for i < len(data)-1 {
		if len(row) > 0 {
			if data[i] != ',' {
				return errors.New("row: malformed object")
			}
			i = skipSpace(data, i+1)
		}
		end, err := skipJSONString(data, i)
		if err != nil {
			return err
		}
		name := string(data[i+1 : end-1])
		if bytes.IndexByte(data[i+1:end-1], '\\') >= 0 {
			if err := json.Unmarshal(data[i:end], &name); err != nil {
				return fmt.Errorf("row: %w", err)
			}
		}
		i = skipSpace(data, end)
		if i >= len(data) || data[i] != ':' {
			return errors.New("row: malformed object")
		}
		i = skipSpace(data, i+1)
		vend, err := skipJSONValue(data, i)
		if err != nil {
			return fmt.Errorf("row column %q: %w", name, err)
		}
		row = append(row, Column{Name: name, Value: json.RawMessage(data[i:vend])})
		i = skipSpace(data, vend)
	}
	*r = row
	return nil
}

func skipSpace(d []byte, i int) int {
	for i < len(d) && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r') {
		i++
	}
	return i
}

var errMalformed = errors.New("malformed JSON")

// skipJSONString returns the index after the string starting at d[i].
func skipJSONString(d []byte, i int) (int, error) {
	if i >= len(d) || d[i] != '"' {
		return 0, errMalformed
	}
	for i++; i < len(d); i++ {
		switch d[i] {
		case '\\':
			i++
		case '"':
			return i + 1, nil
		}
	}
	return 0, errMalformed
}

// skipJSONValue returns the index after the value starting at d[i].
func skipJSONValue(d []byte, i int) (int, error) {
	if i >= len(d) {
		return 0, errMalformed
	}
	switch d[i] {
	case '"':
		return skipJSONString(d, i)
	case '{', '[':
		depth := 0
		for i < len(d) {
			switch d[i] {
			case '"':
				end, err := skipJSONString(d, i)
				if err != nil {
					return 0, err
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
		return 0, errMalformed
	}
	start := i
	for i < len(d) && d[i] != ',' && d[i] != '}' && d[i] != ']' && d[i] != ' ' && d[i] != '\t' && d[i] != '\n' && d[i] != '\r' {
		i++
	}
	if i == start {
		return 0, errMalformed
	}
	return i, nil
}

// Source describes where an event came from, Debezium-style.
type Source struct {
	Connector string `json:"connector"`
	Name      string `json:"name"`
	DB        string `json:"db"`
	Schema    string `json:"schema"`
	Table     string `json:"table"`
	TxID      uint32 `json:"txId"`
	LSN       uint64 `json:"lsn"`
	CommitLSN uint64 `json:"commit_lsn"`
	TsMs      int64  `json:"ts_ms"`
	// Snapshot is "true" for snapshot/backfill rows, "last" for the final row
	// of an initial snapshot, and "false" for streamed changes.
	Snapshot string `json:"snapshot"`
	// TsUs is the commit time in microseconds (ts_us; ts_ns is derived).
	TsUs int64 `json:"ts_us"`
	// LastCommitLSN is the commit LSN of the transaction before this one
	// on the stream (0: unknown), the first half of Debezium's sequence.
	LastCommitLSN uint64 `json:"-"`
	// Epoch is the source epoch of the event's position (see Position). It
	// travels in the position header only, so the value stays what every
	// Debezium consumer reads.
	Epoch uint32 `json:"-"`
}

// DebeziumVersion is the Debezium release whose record format cdcsync
// follows; both encodings write it as source.version.
const DebeziumVersion = "3.1.3.Final"

// AppendSequence appends Debezium's source.sequence for s, the JSON text
// ["<last commit LSN>","<LSN>"] (null when the last commit is unknown).
func AppendSequence(buf []byte, s *Source) []byte {
	buf = append(buf, '[')
	if s.LastCommitLSN == 0 {
		buf = append(buf, "null"...)
	} else {
		buf = append(buf, '"')
		buf = strconv.AppendUint(buf, s.LastCommitLSN, 10)
		buf = append(buf, '"')
	}
	buf = append(buf, ',', '"')
	buf = strconv.AppendUint(buf, s.LSN, 10)
	return append(buf, '"', ']')
}

// Event is one change: the value written to Kafka.
type Event struct {
	Before Row `json:"before"`
	After  Row `json:"after"`
	// Unchanged names TOASTed columns whose value was not sent because it did
	// not change; they are absent from After and sinks keep what they have.
	Unchanged []string `json:"unchanged,omitempty"`
	Source    Source   `json:"source"`
	Op        Op       `json:"op"`
	TsMs      int64    `json:"ts_ms"`
	// Transaction is Debezium's transaction block, set when capture
	// provides transaction metadata; nil leaves it out.
	Transaction *Transaction `json:"transaction,omitempty"`
	// TsNs is when capture made the event, in nanoseconds (Debezium's
	// envelope ts_us and ts_ns); 0 means TsMs is all that is known.
	TsNs int64 `json:"-"`
}

// Transaction places an event in its transaction (Debezium's
// provide.transaction.metadata).
type Transaction struct {
	ID                  string `json:"id"` // "<txId>:<commit LSN>"
	TotalOrder          int64  `json:"total_order"`
	DataCollectionOrder int64  `json:"data_collection_order"`
}

// AppendJSON appends the block as Debezium writes it.
func (t *Transaction) AppendJSON(buf []byte) []byte {
	if t == nil {
		return append(buf, "null"...)
	}
	buf = append(buf, `{"id":`...)
	buf = AppendString(buf, t.ID)
	buf = append(buf, `,"total_order":`...)
	buf = strconv.AppendInt(buf, t.TotalOrder, 10)
	buf = append(buf, `,"data_collection_order":`...)
	buf = strconv.AppendInt(buf, t.DataCollectionOrder, 10)
	return append(buf, '}')
}

// Position returns the stream position the event carries.
func (e *Event) Position() Position {
	return Position{Epoch: e.Source.Epoch, Commit: pglogrepl.LSN(e.Source.CommitLSN), Change: pglogrepl.LSN(e.Source.LSN)}
}

// SetPosition stores p in the event's source block.
func (e *Event) SetPosition(p Position) {
	e.Source.Epoch = p.Epoch
	e.Source.CommitLSN = uint64(p.Commit)
	e.Source.LSN = uint64(p.Change)
}

// AppendJSON appends the event's envelope to buf. It is the hot path of
// capture, so it writes JSON directly instead of going through reflection.
func (e *Event) AppendJSON(buf []byte) []byte {
	buf = append(buf, `{"before":`...)
	buf = e.Before.AppendJSON(buf)
	buf = append(buf, `,"after":`...)
	buf = e.After.AppendJSON(buf)
	if len(e.Unchanged) > 0 {
		buf = append(buf, `,"unchanged":[`...)
		for i, n := range e.Unchanged {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = AppendString(buf, n)
		}
		buf = append(buf, ']')
	}
	s := &e.Source
	buf = append(buf, `,"source":{"connector":`...)
	buf = AppendString(buf, s.Connector)
	buf = append(buf, `,"name":`...)
	buf = AppendString(buf, s.Name)
	buf = append(buf, `,"db":`...)
	buf = AppendString(buf, s.DB)
	buf = append(buf, `,"schema":`...)
	buf = AppendString(buf, s.Schema)
	buf = append(buf, `,"table":`...)
	buf = AppendString(buf, s.Table)
	buf = append(buf, `,"txId":`...)
	buf = strconv.AppendUint(buf, uint64(s.TxID), 10)
	buf = append(buf, `,"lsn":`...)
	buf = strconv.AppendUint(buf, s.LSN, 10)
	buf = append(buf, `,"commit_lsn":`...)
	buf = strconv.AppendUint(buf, s.CommitLSN, 10)
	buf = append(buf, `,"ts_ms":`...)
	buf = strconv.AppendInt(buf, s.TsMs, 10)
	buf = append(buf, `,"snapshot":`...)
	buf = AppendString(buf, s.Snapshot)
	// Debezium's remaining source fields.
	buf = append(buf, `,"version":"`+DebeziumVersion+`","ts_us":`...)
	us := s.TsUs
	if us == 0 {
		us = s.TsMs * 1000
	}
	buf = strconv.AppendInt(buf, us, 10)
	buf = append(buf, `,"ts_ns":`...)
	buf = strconv.AppendInt(buf, us*1000, 10)
	// sequence is a JSON string holding ["<last commit>","<lsn>"]:
	// written escaped in place, without building the inner text first.
	buf = append(buf, `,"sequence":"[`...)
	if s.LastCommitLSN == 0 {
		buf = append(buf, "null"...)
	} else {
		buf = append(buf, '\\', '"')
		buf = strconv.AppendUint(buf, s.LastCommitLSN, 10)
		buf = append(buf, '\\', '"')
	}
	buf = append(buf, `,\"`...)
	buf = strconv.AppendUint(buf, s.LSN, 10)
	buf = append(buf, `\"]","xmin":null}`...)
	if e.Transaction != nil {
		buf = append(buf, `,"transaction":`...)
		buf = e.Transaction.AppendJSON(buf)
	}
	buf = append(buf, `,"op":`...)
	buf = AppendString(buf, string(e.Op))
	buf = append(buf, `,"ts_ms":`...)
	buf = strconv.AppendInt(buf, e.TsMs, 10)
	return append(buf, '}')
}

// DecodeEvent parses and validates an envelope. Errors describe what is
// wrong so that a dead-letter header can carry them.
func DecodeEvent(data []byte) (*Event, error) {
	var e Event
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return &e, nil
}

// Validate checks what every decoded envelope must have: a known op, the
// table, and the row the op needs.
func (e *Event) Validate() error {
	if !e.Op.Valid() {
		return fmt.Errorf("decode event: unknown op %q", e.Op)
	}
	if e.Source.Table == "" {
		return errors.New("decode event: source.table is missing")
	}
	switch e.Op {
	case OpCreate, OpUpdate, OpRead:
		if e.After == nil {
			return fmt.Errorf("decode event: op %q without after", e.Op)
		}
	case OpDelete:
		if e.Before == nil {
			return errors.New(`decode event: op "d" without before`)
		}
	}
	return nil
}

// Topic names the Kafka topic of a table: <prefix>.<schema>.<table>.
func Topic(prefix, schema, table string) string {
	return prefix + "." + schema + "." + table
}

// TruncateKey is the key of a truncate record. Compacted topics refuse
// records without a key, and a control record's key must never be a row's:
// no table has a key column of this name. Every truncate of a table shares
// it, so compaction keeps only the table's latest truncate, which is all a
// rebuild needs (it supersedes every event at or before it).
const TruncateKey = `{"__cdcsync_control":"truncate"}`

// ResnapshotKey is the key of the control record capture writes to a
// table's topic when it has read the table again after a lost slot (see
// HeaderControl). Its value is not null (ResnapshotValue): Kafka's log
// compaction removes a null-valued record (a tombstone) after the topic's
// delete.retention.ms, but always keeps the latest record of a key with a
// value, so a consumer rebuilding from a compacted topic still finds the
// latest resnapshot-done record, after every row it covers. Consumers that
// read only rows skip records with a HeaderControl header.
const ResnapshotKey = `{"__cdcsync_control":"resnapshot"}`

// ResnapshotValue is the value of a resnapshot-done record: what the
// headers say, as JSON, e.g.
// {"__cdcsync_control":"resnapshot-done","table":"public.orders","source_epoch":1795600000}.
func ResnapshotValue(table string, epoch uint32) []byte {
	b := AppendString([]byte(`{"__cdcsync_control":"`+ControlResnapshotDone+`","table":`), table)
	b = append(b, `,"source_epoch":`...)
	return append(strconv.AppendUint(b, uint64(epoch), 10), '}')
}

// ResnapshotValueWithSchema is ResnapshotValue in JsonConverter's envelope
// (see ResnapshotKeyWithSchema).
func ResnapshotValueWithSchema(table string, epoch uint32) []byte {
	b := []byte(`{"schema":{"type":"struct","fields":[{"type":"string","optional":false,"field":"__cdcsync_control"},` +
		`{"type":"string","optional":false,"field":"table"},{"type":"int64","optional":false,"field":"source_epoch"}],` +
		`"optional":false,"name":"cdcsync.ResnapshotDone"},"payload":`)
	return append(append(b, ResnapshotValue(table, epoch)...), '}')
}

// IsControl reports whether a record with these headers is one of
// cdcsync's control records (HeaderControl), not a row's change.
func IsControl(headers []*sarama.RecordHeader) bool {
	for _, h := range headers {
		if h != nil && string(h.Key) == HeaderControl {
			return true
		}
	}
	return false
}

// ResnapshotKeyWithSchema is ResnapshotKey in Kafka Connect JsonConverter's
// envelope (see WatermarkKeyWithSchema), for topics written with the
// debezium encoding and schemas enabled.
const ResnapshotKeyWithSchema = `{"schema":{"type":"struct","fields":[{"type":"string","optional":false,"field":"__cdcsync_control"}],` +
	`"optional":false,"name":"cdcsync.Control"},"payload":` + ResnapshotKey + `}`

// A resnapshot-done record (key ResnapshotKey, value ResnapshotValue) carries these
// headers: HeaderControl = ControlResnapshotDone, HeaderTable the table and
// HeaderPosition the start of its source epoch ("<epoch>@0/0:0/0"). It
// means: every row of the table that exists is on the topic at a position
// in that epoch or later, so a consumer drops what it holds of the table
// from an older epoch (rows deleted while no slot recorded), like a
// truncate at that position that re-emitted rows outlive.
const (
	HeaderControl         = "cdcsync.control"
	HeaderTable           = "cdcsync.table"
	ControlResnapshotDone = "resnapshot-done"
)

// Header names written on every change message.
const (
	HeaderPosition = "cdcsync.position" // Position.String()
	HeaderOp       = "cdcsync.op"
)

// Dead-letter headers.
const (
	HeaderDLQError     = "cdcsync.dlq.error"
	HeaderDLQTopic     = "cdcsync.dlq.topic"
	HeaderDLQPartition = "cdcsync.dlq.partition"
	HeaderDLQOffset    = "cdcsync.dlq.offset"
	HeaderDLQSink      = "cdcsync.dlq.sink"
	// HeaderDLQOmitted says what a dead letter left out to fit the
	// dead-letter producer's size limit, e.g. "value (1048000 bytes)".
	HeaderDLQOmitted = "cdcsync.dlq.omitted"
)

// KeyString joins primary-key values with ':' the way the Redis row cache
// names keys: strings are used raw, other JSON values as written.
func KeyString(key Row) string {
	var b strings.Builder
	for i, c := range key {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(ScalarText(c.Value))
	}
	return b.String()
}

// ScalarText returns a JSON string's contents, or the raw JSON text of any
// other value ("null" for a missing one).
func ScalarText(v json.RawMessage) string {
	if len(v) == 0 {
		return "null"
	}
	if v[0] == '"' {
		var s string
		if err := json.Unmarshal(v, &s); err == nil {
			return s
		}
	}
	return string(v)
}

package debezium

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"

	"github.com/cdcsync/cdcsync/pipeline"
)

// HeaderUnchanged lists, as a JSON array, the columns of an event that
// Debezium's encoding replaced by the placeholder because they were
// unchanged TOASTed values; sinks keep what they have for those.
const HeaderUnchanged = "cdcsync.unchanged"

// jsonSchema is a Connect schema as JsonConverter writes it.
type jsonSchema struct {
	Type       string            `json:"type"`
	Name       string            `json:"name"`
	Parameters map[string]string `json:"parameters"`
	Fields     []jsonSchema      `json:"fields"`
	Field      string            `json:"field"`
	Items      *jsonSchema       `json:"items"`
	Values     *jsonSchema       `json:"values"`
}

func (s *jsonSchema) field(name string) *jsonSchema {
	for i := range s.Fields {
		if s.Fields[i].Field == name {
			return &s.Fields[i]
		}
	}
	return nil
}

// wrapped is a JsonConverter record with schemas enabled.
type wrapped struct {
	Schema  *jsonSchema     `json:"schema"`
	Payload json.RawMessage `json:"payload"`
}

// hasSchema reports whether data is {"schema":…,"payload":…}.
func hasSchema(data []byte) bool {
	return bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte(`{"schema"`))
}

// DecodeEvent decodes a change record in either encoding: cdcsync's, or
// Debezium's through JsonConverter with or without schemas. With schemas,
// Debezium's value encodings (Decimal, MicroTimestamp, Date, …) are turned
// back into cdcsync's. position is the cdcsync.position header ("" when
// absent) and unchanged the cdcsync.unchanged one: Debezium's source has
// no commit LSN and its placeholders must not reach a store.
func DecodeEvent(data []byte, position, unchanged string) (*pipeline.Event, error) {
	var ev *pipeline.Event
	var placeholders bool
	if hasSchema(data) {
		var w wrapped
		if err := json.Unmarshal(data, &w); err != nil {
			return nil, fmt.Errorf("decode event: %w", err)
		}
		if w.Schema == nil {
			return nil, errors.New("decode event: schema is null")
		}
		var err error
		if ev, err = decodePayload(w.Schema, w.Payload); err != nil {
			return nil, err
		}
		placeholders = true
	} else {
		var err error
		if ev, err = pipeline.DecodeEvent(data); err != nil {
			return nil, err
		}
		placeholders = ev.Source.CommitLSN == 0 // Debezium without schemas
	}
	if unchanged != "" {
		var cols []string
		if err := json.Unmarshal([]byte(unchanged), &cols); err != nil {
			return nil, fmt.Errorf("decode event: header %s: %w", HeaderUnchanged, err)
		}
		ev.After, ev.Unchanged = dropColumns(ev.After, cols)
	} else if placeholders {
		// A Debezium record cdcsync did not write: its default placeholder.
		ev.After, ev.Unchanged = dropPlaceholders(ev.After)
	}
	if ev.Source.CommitLSN == 0 {
		switch {
		case position != "":
			pos, err := pipeline.ParsePosition(position)
			if err != nil {
				return nil, fmt.Errorf("decode event: header %s: %w", pipeline.HeaderPosition, err)
			}
			ev.SetPosition(pos)
		case ev.Source.LSN != 0:
			// Per key, change LSNs grow in commit order (a row's next
			// change waits for the previous transaction's commit).
			ev.Source.CommitLSN = ev.Source.LSN
		}
	}
	return ev, nil
}

func dropColumns(row pipeline.Row, cols []string) (pipeline.Row, []string) {
	if row == nil || len(cols) == 0 {
		return row, nil
	}
	out := row[:0:0]
	for _, c := range row {
		if !slices.Contains(cols, c.Name) {
			out = append(out, c)
		}
	}
	return out, cols
}

func dropPlaceholders(row pipeline.Row) (pipeline.Row, []string) {
	var names []string
	var out pipeline.Row
	for i, c := range row {
		if isPlaceholder(c.Value) {
			if names == nil {
				out = append(pipeline.Row(nil), row[:i]...)
			}
			names = append(names, c.Name)
			continue
		}
		if names != nil {
			out = append(out, c)
		}
	}
	if names == nil {
		return row, nil
	}
	return out, names
}

var placeholderForms = [][]byte{
	[]byte(`"` + DefaultPlaceholder + `"`),
	[]byte(`"` + base64.StdEncoding.EncodeToString([]byte(DefaultPlaceholder)) + `"`),
	[]byte(`["` + DefaultPlaceholder + `"]`),
	[]byte(`{"` + DefaultPlaceholder + `":"` + DefaultPlaceholder + `"}`),
	[]byte(`"{\"` + DefaultPlaceholder + `\":\"` + DefaultPlaceholder + `\"}"`),
}

func isPlaceholder(v json.RawMessage) bool {
	for _, p := range placeholderForms {
		if bytes.Equal(v, p) {
			return true
		}
	}
	return false
}

// DecodeKey decodes a record key in either encoding.
func DecodeKey(data []byte) (pipeline.Row, error) {
	if !hasSchema(data) {
		var row pipeline.Row
		if err := json.Unmarshal(data, &row); err != nil {
			return nil, err
		}
		return row, nil
	}
	var w wrapped
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, err
	}
	if w.Schema == nil {
		return nil, errors.New("key schema is null")
	}
	return decodeRow(w.Schema, w.Payload)
}

// payload is an envelope's payload; rows are converted with the schema.
type payload struct {
	Before      json.RawMessage       `json:"before"`
	After       json.RawMessage       `json:"after"`
	Source      pipeline.Source       `json:"source"`
	Transaction *pipeline.Transaction `json:"transaction"`
	Op          pipeline.Op           `json:"op"`
	TsMs        int64                 `json:"ts_ms"`
	TsNs        int64                 `json:"ts_ns"`
}

func decodePayload(s *jsonSchema, data json.RawMessage) (*pipeline.Event, error) {
	var p payload
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("decode event: payload: %w", err)
	}
	ev := &pipeline.Event{Source: p.Source, Transaction: p.Transaction, Op: p.Op, TsMs: p.TsMs, TsNs: p.TsNs}
	var err error
	if rs := s.field("before"); rs != nil {
		if ev.Before, err = decodeRow(rs, p.Before); err != nil {
			return nil, fmt.Errorf("decode event: before: %w", err)
		}
	}
	if rs := s.field("after"); rs != nil {
		if ev.After, err = decodeRow(rs, p.After); err != nil {
			return nil, fmt.Errorf("decode event: after: %w", err)
		}
	}
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	return ev, nil
}

// decodeRow turns a struct value into a Row of cdcsync JSON values.
func decodeRow(s *jsonSchema, data json.RawMessage) (pipeline.Row, error) {
	var row pipeline.Row
	if err := json.Unmarshal(data, &row); err != nil {
		return nil, err
	}
	for i, c := range row {
		fs := s.field(c.Name)
		if fs == nil {
			continue
		}
		v, err := toCdcsync(fs, c.Value)
		if err != nil {
			return nil, fmt.Errorf("column %q: %w", c.Name, err)
		}
		row[i].Value = v
	}
	return row, nil
}

// toCdcsync converts one payload value to cdcsync's rendering of it, where
// the schema says how; anything else is kept as it is.
func toCdcsync(s *jsonSchema, v json.RawMessage) (json.RawMessage, error) {
	if len(v) == 0 || string(v) == "null" || isPlaceholder(v) {
		return v, nil
	}
	switch s.Name {
	case nameDecimal:
		var b64 string
		if err := json.Unmarshal(v, &b64); err != nil {
			return v, nil // string or double mode: not bytes
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("decimal: %w", err)
		}
		scale, _ := strconv.Atoi(s.Parameters["scale"])
		return quote(decimal{unscaled: fromTwosComplement(raw), scale: scale}.String()), nil
	case nameVarDecimal:
		var d struct {
			Scale int    `json:"scale"`
			Value []byte `json:"value"`
		}
		if err := json.Unmarshal(v, &d); err != nil {
			return nil, fmt.Errorf("variable scale decimal: %w", err)
		}
		return quote(decimal{unscaled: fromTwosComplement(d.Value), scale: d.Scale}.String()), nil
	case nameDate, nameConnectDate:
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("date: %w", err)
		}
		switch n {
		case dateInfinity("infinity"):
			return quote("infinity"), nil
		case dateInfinity("-infinity"):
			return quote("-infinity"), nil
		}
		return quote(string(appendDate(nil, n))), nil
	case nameTime, nameConnectTime, nameMicroTime:
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("time: %w", err)
		}
		if s.Name != nameMicroTime {
			n *= 1000
		}
		return quote(string(appendTimeOfDay(nil, n))), nil
	case nameTimestamp, nameConnectTs, nameMicroTimestamp:
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("timestamp: %w", err)
		}
		switch n {
		case tsPosInfinity:
			return quote("infinity"), nil
		case tsNegInfinity:
			return quote("-infinity"), nil
		}
		if s.Name != nameMicroTimestamp {
			n *= 1000
		}
		return quote(string(appendLocalTimestamp(nil, n))), nil
	case nameZonedTimestamp:
		var text string
		if err := json.Unmarshal(v, &text); err != nil {
			return nil, fmt.Errorf("zoned timestamp: %w", err)
		}
		return quote(trimZoned(text)), nil
	case nameInterval:
		var text string
		if err := json.Unmarshal(v, &text); err != nil {
			return nil, fmt.Errorf("interval: %w", err)
		}
		return quote(compactInterval(text)), nil
	case namePoint:
		var p struct{ X, Y float64 }
		if err := json.Unmarshal(v, &p); err != nil {
			return nil, fmt.Errorf("point: %w", err)
		}
		return quote("(" + strconv.FormatFloat(p.X, 'g', -1, 64) + "," + strconv.FormatFloat(p.Y, 'g', -1, 64) + ")"), nil
	}
	switch s.Type {
	case "array":
		if s.Items == nil {
			return v, nil
		}
		var elems []json.RawMessage
		if err := json.Unmarshal(v, &elems); err != nil {
			return nil, fmt.Errorf("array: %w", err)
		}
		buf := []byte{'['}
		for i, e := range elems {
			ce, err := toCdcsync(s.Items, e)
			if err != nil {
				return nil, err
			}
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, ce...)
		}
		return append(buf, ']'), nil
	case "float", "double":
		if v[0] == '"' {
			return v, nil // NaN, Infinity: as cdcsync writes them
		}
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return nil, fmt.Errorf("float: %w", err)
		}
		bits := 64
		if s.Type == "float" {
			bits = 32
		}
		return json.RawMessage(strconv.FormatFloat(f, 'g', -1, bits)), nil
	case "map":
		// hstore in map mode: back to its text form.
		return hstoreText(v)
	}
	return v, nil
}

func quote(s string) json.RawMessage { return json.RawMessage(appendJacksonString(nil, s)) }

// fromTwosComplement is new BigInteger(bytes).
func fromTwosComplement(b []byte) *big.Int {
	v := new(big.Int).SetBytes(b)
	if len(b) > 0 && b[0]&0x80 != 0 {
		v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return v
}

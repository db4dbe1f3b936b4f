package capture

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unsafe"

	"github.com/cdcsync/cdcsync/pipeline"
)

// SessionParams returns the runtime parameters capture sets on its
// replication and snapshot connections. pgoutput and the snapshot read values
// in the server's text output format, which depends on these settings; fixing
// them makes that text predictable: timestamps in ISO form and in UTC,
// intervals as ISO 8601 durations, floats printed exactly (shortest
// round-trip form), bytea in hex.
func SessionParams() map[string]string {
	return map[string]string{
		"TimeZone":           "UTC",
		"DateStyle":          "ISO, YMD",
		"IntervalStyle":      "iso_8601",
		"extra_float_digits": "3",
		"bytea_output":       "hex",
	}
}

// kind says how the text form of a type becomes JSON.
type kind uint8

const (
	// kindText: a JSON string holding the text as printed. Used for every
	// type without a better mapping: text types, numeric (a decimal string
	// keeps every digit), uuid, inet, money, enums, composites, ranges,
	// date, time, timetz, interval, and json/jsonb (Debezium's
	// io.debezium.data.Json is the JSON text in a string).
	kindText        kind = iota
	kindInt              // JSON number, as printed
	kindFloat            // JSON number; NaN and ±Infinity as strings
	kindBool             // true/false
	kindTimestamptz      // "2006-01-02T15:04:05.999999Z"
	kindTimestamp        // "2006-01-02T15:04:05.999999"
	kindBytea            // base64 string
	kindArray            // JSON array of elements encoded by elem
)

// typeInfo is how one type is encoded. Values are immutable once published
// in a Types registry, so decoders may keep pointers to them.
type typeInfo struct {
	kind  kind
	delim byte      // array element delimiter (',' for all but box)
	elem  *typeInfo // element type of an array
	// guessed marks an array type inferred from a name alone (see
	// Types.AddType): a value that does not parse as an array is kept as
	// a string rather than failing.
	guessed bool
}

// errBadValue marks a value whose text does not have the form its type
// prints; it means capture's idea of the column type is wrong.
var errBadValue = errors.New("malformed value")

// appendValue appends the JSON encoding of text, the non-NULL text output of
// a value of type ti, to buf.
func appendValue(buf []byte, ti *typeInfo, text []byte) ([]byte, error) {
	if ti == nil {
		return appendText(buf, text), nil
	}
	switch ti.kind {
	case kindInt:
		if !isJSONNumber(text) {
			return buf, fmt.Errorf("%w: not an integer (%d bytes)", errBadValue, len(text))
		}
		return append(buf, text...), nil
	case kindFloat:
		if isJSONNumber(text) {
			return append(buf, text...), nil
		}
		switch string(text) {
		case "NaN", "Infinity", "-Infinity":
			return appendText(buf, text), nil
		}
		return buf, fmt.Errorf("%w: not a float (%d bytes)", errBadValue, len(text))
	case kindBool:
		switch string(text) {
		case "t":
			return append(buf, "true"...), nil
		case "f":
			return append(buf, "false"...), nil
		}
		return buf, fmt.Errorf("%w: not a boolean (%d bytes)", errBadValue, len(text))
	case kindTimestamptz:
		return appendTimestamptz(buf, text), nil
	case kindTimestamp:
		return appendTimestamp(buf, text), nil
	case kindBytea:
		return appendBytea(buf, text)
	case kindArray:
		out, err := appendArray(buf, ti, text)
		if err != nil && ti.guessed {
			return appendText(buf, text), nil
		}
		return out, err
	default:
		return appendText(buf, text), nil
	}
}

// appendText appends text as a JSON string.
func appendText(buf, text []byte) []byte {
	if len(text) == 0 {
		return append(buf, `""`...)
	}
	// AppendString only reads s during the call, so viewing the bytes as a
	// string without copying them is safe and saves an allocation per value.
	return pipeline.AppendString(buf, unsafe.String(&text[0], len(text)))
}

// isJSONNumber reports whether b is a number in JSON's grammar.
func isJSONNumber(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return false
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		if i == start {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		start := i
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		if i == start {
			return false
		}
	}
	return i == len(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// appendTimestamp turns "2024-01-02 03:04:05.123456" into
// "2024-01-02T03:04:05.123456". Values ISO 8601 cannot express the way
// Postgres means them (infinity, -infinity, BC dates) stay as printed.
func appendTimestamp(buf, text []byte) []byte {
	if dt, ok := parseDateTime(text); !ok || dt.rest != 0 {
		return appendText(buf, text)
	}
	start := len(buf)
	buf = appendText(buf, text)
	for i := start + 1; i < len(buf); i++ {
		if buf[i] == ' ' {
			buf[i] = 'T'
			break
		}
	}
	return buf
}

// appendTimestamptz turns "2024-01-02 03:04:05.123456+05:30" into
// "2024-01-01T21:34:05.123456Z": the instant in UTC. With SessionParams the
// server already prints "+00" and this is a copy; other offsets are
// converted. infinity, -infinity and BC values stay as printed.
func appendTimestamptz(buf, text []byte) []byte {
	dt, ok := parseDateTime(text)
	if !ok || dt.rest == 0 {
		return appendText(buf, text)
	}
	offset, ok := parseOffset(text[dt.rest:])
	if !ok {
		return appendText(buf, text)
	}
	if offset == 0 {
		buf = append(buf, '"')
		buf = append(buf, text[:dt.timeStart-1]...)
		buf = append(buf, 'T')
		buf = append(buf, text[dt.timeStart:dt.rest]...)
		return append(buf, 'Z', '"')
	}
	t := time.Date(dt.year, time.Month(dt.month), dt.day, dt.hour, dt.min, dt.sec, 0, time.UTC).
		Add(-time.Duration(offset) * time.Second)
	if t.Year() < 1 {
		// Year 0 and before is BC in Postgres' calendar; keep the text.
		return appendText(buf, text)
	}
	buf = append(buf, '"')
	if y := t.Year(); y < 10000 {
		buf = appendPadded(buf, y, 4)
	} else {
		buf = strconv.AppendInt(buf, int64(y), 10)
	}
	buf = append(buf, '-')
	buf = appendPadded(buf, int(t.Month()), 2)
	buf = append(buf, '-')
	buf = appendPadded(buf, t.Day(), 2)
	buf = append(buf, 'T')
	buf = appendPadded(buf, t.Hour(), 2)
	buf = append(buf, ':')
	buf = appendPadded(buf, t.Minute(), 2)
	buf = append(buf, ':')
	buf = appendPadded(buf, t.Second(), 2)
	buf = append(buf, text[dt.fracStart:dt.rest]...) // ".123456" or nothing
	return append(buf, 'Z', '"')
}

func appendPadded(buf []byte, v, width int) []byte {
	var tmp [20]byte
	s := strconv.AppendInt(tmp[:0], int64(v), 10)
	for i := len(s); i < width; i++ {
		buf = append(buf, '0')
	}
	return append(buf, s...)
}

// dateTime is "YYYY-MM-DD HH:MM:SS[.ffffff]" parsed from the start of a
// value; rest is the index after it (0 when nothing follows).
type dateTime struct {
	year, month, day, hour, min, sec int
	timeStart, fracStart, rest       int
}

// parseDateTime reads the ISO date and time Postgres prints for timestamp
// and timestamptz. It reports false for anything else (infinity, BC, a
// different DateStyle). For a timestamp without zone the whole text must be
// consumed; for timestamptz the caller parses the offset at rest.
func parseDateTime(b []byte) (dateTime, bool) {
	var dt dateTime
	i := 0
	for i < len(b) && isDigit(b[i]) {
		dt.year = dt.year*10 + int(b[i]-'0')
		i++
		if i > 9 {
			return dt, false
		}
	}
	if i < 4 {
		return dt, false
	}
	var ok bool
	if dt.month, i, ok = twoDigits(b, i, '-'); !ok {
		return dt, false
	}
	if dt.day, i, ok = twoDigits(b, i, '-'); !ok {
		return dt, false
	}
	dt.timeStart = i + 1
	if dt.hour, i, ok = twoDigits(b, i, ' '); !ok {
		return dt, false
	}
	if dt.min, i, ok = twoDigits(b, i, ':'); !ok {
		return dt, false
	}
	if dt.sec, i, ok = twoDigits(b, i, ':'); !ok {
		return dt, false
	}
	dt.fracStart = i
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		if i == start {
			return dt, false
		}
	}
	if i < len(b) {
		if b[i] != '+' && b[i] != '-' {
			return dt, false // " BC" or something unknown
		}
		dt.rest = i
	}
	return dt, true
}

// twoDigits reads sep followed by two digits at b[i:].
func twoDigits(b []byte, i int, sep byte) (int, int, bool) {
	if i+3 > len(b) || b[i] != sep || !isDigit(b[i+1]) || !isDigit(b[i+2]) {
		return 0, i, false
	}
	return int(b[i+1]-'0')*10 + int(b[i+2]-'0'), i + 3, true
}

// parseOffset reads "+HH", "+HH:MM" or "+HH:MM:SS" (or with '-') and
// returns the offset east of UTC in seconds. The whole input must match.
func parseOffset(b []byte) (int, bool) {
	if len(b) < 3 || (b[0] != '+' && b[0] != '-') || !isDigit(b[1]) || !isDigit(b[2]) {
		return 0, false
	}
	secs := (int(b[1]-'0')*10 + int(b[2]-'0')) * 3600
	i := 3
	for _, mul := range [2]int{60, 1} {
		if i == len(b) {
			break
		}
		v, next, ok := twoDigits(b, i, ':')
		if !ok {
			return 0, false
		}
		secs += v * mul
		i = next
	}
	if i != len(b) {
		return 0, false
	}
	if b[0] == '-' {
		secs = -secs
	}
	return secs, true
}

// appendBytea appends the base64 encoding of a bytea printed in hex
// ("\x0102") or, should bytea_output be "escape", in escape format.
func appendBytea(buf, text []byte) ([]byte, error) {
	// Decode into a fixed chunk whose size is a multiple of 3, so that the
	// base64 of consecutive chunks concatenates without padding in between
	// and large values need no buffer of their own.
	var chunk [3 * 512]byte
	n := 0
	buf = append(buf, '"')
	if len(text) >= 2 && text[0] == '\\' && text[1] == 'x' {
		hex := text[2:]
		if len(hex)%2 != 0 {
			return buf, fmt.Errorf("%w: bytea hex of odd length", errBadValue)
		}
		for i := 0; i < len(hex); i += 2 {
			hi, ok1 := unhex(hex[i])
			lo, ok2 := unhex(hex[i+1])
			if !ok1 || !ok2 {
				return buf, fmt.Errorf("%w: bytea hex digit at %d", errBadValue, i+2)
			}
			chunk[n] = hi<<4 | lo
			if n++; n == len(chunk) {
				buf = base64.StdEncoding.AppendEncode(buf, chunk[:n])
				n = 0
			}
		}
	} else {
		for i := 0; i < len(text); {
			c := text[i]
			i++
			if c == '\\' {
				switch {
				case i < len(text) && text[i] == '\\':
					i++
				case i+3 <= len(text) && isOctal(text[i]) && isOctal(text[i+1]) && isOctal(text[i+2]):
					c = (text[i]-'0')<<6 | (text[i+1]-'0')<<3 | (text[i+2] - '0')
					i += 3
				default:
					return buf, fmt.Errorf("%w: bytea escape at %d", errBadValue, i-1)
				}
			}
			chunk[n] = c
			if n++; n == len(chunk) {
				buf = base64.StdEncoding.AppendEncode(buf, chunk[:n])
				n = 0
			}
		}
	}
	buf = base64.StdEncoding.AppendEncode(buf, chunk[:n])
	return append(buf, '"'), nil
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// appendArray turns Postgres' array text ("{1,2}", "{{a,NULL},{\"b c\",d}}",
// "[0:1]={x,y}") into a JSON array, nested for multi-dimensional arrays, with
// each element encoded by the element type. Explicit lower bounds are
// dropped: a JSON array cannot carry them.
func appendArray(buf []byte, ti *typeInfo, text []byte) ([]byte, error) {
	s := text
	if len(s) > 0 && s[0] == '[' {
		eq := 0
		for eq < len(s) && s[eq] != '=' {
			eq++
		}
		if eq == len(s) {
			return buf, fmt.Errorf("%w: array of %d bytes: dimensions without '='", errBadValue, len(text))
		}
		s = s[eq+1:]
	}
	p := arrayParser{text: text, delim: ti.delim, elem: ti.elem}
	if p.delim == 0 {
		p.delim = ','
	}
	buf, rest, err := p.level(buf, s)
	if err != nil {
		return buf, err
	}
	if len(rest) != 0 {
		return buf, fmt.Errorf("%w: array of %d bytes: text after the closing brace at byte %d", errBadValue, len(text), len(text)-len(rest))
	}
	return buf, nil
}

type arrayParser struct {
	text    []byte // whole value, for errors
	delim   byte
	elem    *typeInfo
	scratch []byte // unescaped quoted element
}

// level parses one brace-enclosed level at the start of s and returns what
// follows it.
func (p *arrayParser) level(buf, s []byte) ([]byte, []byte, error) {
	if len(s) == 0 || s[0] != '{' {
		return buf, s, p.errorf(s, "expected '{'")
	}
	s = s[1:]
	buf = append(buf, '[')
	if len(s) > 0 && s[0] == '}' {
		return append(buf, ']'), s[1:], nil
	}
	for first := true; ; first = false {
		if !first {
			buf = append(buf, ',')
		}
		var err error
		switch {
		case len(s) == 0:
			return buf, s, p.errorf(s, "unterminated")
		case s[0] == '{':
			buf, s, err = p.level(buf, s)
		case s[0] == '"':
			buf, s, err = p.quoted(buf, s)
		default:
			buf, s, err = p.unquoted(buf, s)
		}
		if err != nil {
			return buf, s, err
		}
		switch {
		case len(s) == 0:
			return buf, s, p.errorf(s, "unterminated")
		case s[0] == '}':
			return append(buf, ']'), s[1:], nil
		case s[0] == p.delim:
			s = s[1:]
		default:
			return buf, s, p.errorf(s, "unexpected character")
		}
	}
}

func (p *arrayParser) quoted(buf, s []byte) ([]byte, []byte, error) {
	p.scratch = p.scratch[:0]
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i++; i == len(s) {
				return buf, nil, p.errorf(nil, "unterminated escape")
			}
			p.scratch = append(p.scratch, s[i])
		case '"':
			out, err := appendValue(buf, p.elem, p.scratch)
			return out, s[i+1:], err
		default:
			p.scratch = append(p.scratch, c)
		}
	}
	return buf, nil, p.errorf(nil, "unterminated quoted element")
}

func (p *arrayParser) unquoted(buf, s []byte) ([]byte, []byte, error) {
	i := 0
	for i < len(s) && s[i] != p.delim && s[i] != '}' {
		if s[i] == '{' || s[i] == '"' {
			return buf, s, p.errorf(s[i:], "unexpected character")
		}
		i++
	}
	v := s[:i]
	// array_in reads an unquoted NULL in any case as SQL NULL (array_out
	// quotes elements that spell it), so do the same.
	if len(v) == 4 && (v[0]|0x20) == 'n' && (v[1]|0x20) == 'u' && (v[2]|0x20) == 'l' && (v[3]|0x20) == 'l' {
		return append(buf, "null"...), s[i:], nil
	}
	out, err := appendValue(buf, p.elem, v)
	return out, s[i:], err
}

// errorf describes a malformed array by its size and the byte offset of
// rest (the unparsed tail of p.text; nil: the end), never by its content,
// which may be personal data.
func (p *arrayParser) errorf(rest []byte, msg string) error {
	return fmt.Errorf("%w: array of %d bytes: %s at byte %d", errBadValue, len(p.text), msg, len(p.text)-len(rest))
}

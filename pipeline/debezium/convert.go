package debezium

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

var errValue = errors.New("value does not have its type's form")

// appendValue appends the Debezium payload value of one column, given
// cdcsync's JSON rendering of it.
func (c *Config) appendValue(buf []byte, p *plan, v json.RawMessage) ([]byte, error) {
	if len(v) == 0 || string(v) == "null" {
		return append(buf, "null"...), nil
	}
	switch p.kind {
	case kPass:
		if v[0] == '"' && bytes.Contains(v, []byte(`\u`)) {
			// cdcsync escapes some characters Jackson writes as they are.
			s, err := str(v)
			if err != nil {
				return buf, err
			}
			return appendJacksonString(buf, s), nil
		}
		return append(buf, v...), nil
	case kArray:
		return c.appendArray(buf, p, v)
	case kBitBool:
		s, err := str(v)
		if err != nil {
			return buf, err
		}
		return strconv.AppendBool(buf, s == "1"), nil
	case kFloat32, kFloat64, kDecimalDbl:
		f, err := number(v)
		if err != nil {
			return buf, err
		}
		if p.kind == kFloat32 {
			return appendJavaFloat32(buf, float32(f)), nil
		}
		return appendJavaDouble(buf, f), nil
	}
	s, err := str(v)
	if err != nil {
		return buf, err
	}
	return c.appendText(buf, p, s)
}

// appendText converts a value cdcsync renders as a JSON string.
func (c *Config) appendText(buf []byte, p *plan, s string) ([]byte, error) {
	switch p.kind {
	case kDecimal:
		d, ok := parseDecimal(s)
		if !ok {
			return append(buf, "null"...), nil // NaN and ±Infinity have no Decimal form
		}
		return appendBytesB64(buf, twosComplement(d.rescale(p.scale))), nil
	case kVarDecimal:
		d, ok := parseDecimal(s)
		if !ok {
			return append(buf, "null"...), nil
		}
		buf = append(buf, `{"scale":`...)
		buf = strconv.AppendInt(buf, int64(d.scale), 10)
		buf = append(buf, `,"value":`...)
		buf = appendBytesB64(buf, twosComplement(d.unscaled))
		return append(buf, '}'), nil
	case kDecimalStr:
		switch s {
		case "NaN":
			s = "NAN"
		case "Infinity":
			s = "POSITIVE_INFINITY"
		case "-Infinity":
			s = "NEGATIVE_INFINITY"
		}
		return appendJacksonString(buf, s), nil
	case kMoney, kMoneyStr, kMoneyDbl:
		d, ok := parseDecimal(moneyDigits(s))
		if !ok {
			return buf, fmt.Errorf("%w: money", errValue)
		}
		switch p.kind {
		case kMoney:
			return appendBytesB64(buf, twosComplement(d.rescale(p.scale))), nil
		case kMoneyStr:
			return appendJacksonString(buf, d.String()), nil
		}
		f, _ := strconv.ParseFloat(d.String(), 64)
		return appendJavaDouble(buf, f), nil
	case kDate:
		if s == "infinity" || s == "-infinity" {
			return strconv.AppendInt(buf, dateInfinity(s), 10), nil
		}
		dt, err := parseDateTime(s)
		if err != nil {
			return buf, err
		}
		return strconv.AppendInt(buf, dt.epochDay(), 10), nil
	case kTimeMillis, kTimeMicros:
		t, err := parseTimeOfDay(s)
		if err != nil {
			return buf, err
		}
		us := int64(t.hour*3600+t.min*60+t.sec)*1_000_000 + int64(t.micros)
		if p.kind == kTimeMillis {
			return strconv.AppendInt(buf, us/1000, 10), nil
		}
		return strconv.AppendInt(buf, us, 10), nil
	case kTimetz:
		t, err := parseTimeOfDay(s)
		if err != nil {
			return buf, err
		}
		secs := floorMod(int64(t.hour*3600+t.min*60+t.sec-t.offset), 86400)
		buf = append(buf, '"')
		buf = appendPad(buf, int(secs/3600), 2)
		buf = append(buf, ':')
		buf = appendPad(buf, int(secs/60%60), 2)
		buf = append(buf, ':')
		buf = appendPad(buf, int(secs%60), 2)
		buf = appendTrimmedFraction(buf, t.micros)
		return append(buf, 'Z', '"'), nil
	case kTsMillis, kTsMicros:
		switch s {
		case "infinity":
			return strconv.AppendInt(buf, tsPosInfinity, 10), nil
		case "-infinity":
			return strconv.AppendInt(buf, tsNegInfinity, 10), nil
		}
		dt, err := parseDateTime(s)
		if err != nil {
			return buf, err
		}
		us := dt.epochMicros()
		if p.kind == kTsMillis {
			return strconv.AppendInt(buf, floorDiv(us, 1000), 10), nil
		}
		return strconv.AppendInt(buf, us, 10), nil
	case kTimestamptz:
		if s == "infinity" || s == "-infinity" {
			return appendJacksonString(buf, s), nil
		}
		dt, err := parseDateTime(s)
		if err != nil {
			return buf, err
		}
		buf = append(buf, '"')
		buf = appendISOInstant(buf, dt.epochMicros(), p.width)
		return append(buf, '"'), nil
	case kIntervalUs, kIntervalStr:
		iv, err := parseISOInterval(s)
		if err != nil {
			return buf, err
		}
		if p.kind == kIntervalStr {
			return appendJacksonString(buf, iv.isoString()), nil
		}
		return strconv.AppendInt(buf, iv.micros(), 10), nil
	case kBytes:
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return buf, fmt.Errorf("%w: bytea base64: %v", errValue, err)
		}
		return c.appendBinary(buf, raw), nil
	case kTextBytes:
		return c.appendBinary(buf, []byte(s)), nil
	case kBits:
		return appendBytesB64(buf, bitsLittleEndian(s)), nil
	case kHstoreJSON, kHstoreMap:
		keys, vals, err := parseHstore(s)
		if err != nil {
			return buf, err
		}
		obj := appendHstoreObject(nil, keys, vals)
		if p.kind == kHstoreMap {
			return append(buf, obj...), nil
		}
		return appendJacksonString(buf, string(obj)), nil
	case kPoint:
		x, y, err := parsePoint(s)
		if err != nil {
			return buf, err
		}
		buf = append(buf, `{"x":`...)
		buf = appendJavaDouble(buf, x)
		buf = append(buf, `,"y":`...)
		buf = appendJavaDouble(buf, y)
		buf = append(buf, `,"wkb":`...)
		buf = appendBytesB64(buf, pointWKB(x, y))
		return append(buf, `,"srid":null}`...), nil
	}
	return appendJacksonString(buf, s), nil
}

// appendBinary writes bytes in CDCSYNC_BINARY_HANDLING_MODE.
func (c *Config) appendBinary(buf, raw []byte) []byte {
	switch c.BinaryHandling {
	case "hex":
		return appendJacksonString(buf, hex.EncodeToString(raw))
	case "base64-url-safe":
		return appendJacksonString(buf, base64.URLEncoding.EncodeToString(raw))
	}
	// "bytes" (JsonConverter writes bytes as base64) and "base64".
	return appendBytesB64(buf, raw)
}

func appendBytesB64(buf, raw []byte) []byte {
	buf = append(buf, '"')
	buf = base64.StdEncoding.AppendEncode(buf, raw)
	return append(buf, '"')
}

func (c *Config) appendArray(buf []byte, p *plan, v json.RawMessage) ([]byte, error) {
	var elems []json.RawMessage
	if err := json.Unmarshal(v, &elems); err != nil {
		return buf, fmt.Errorf("%w: array: %v", errValue, err)
	}
	buf = append(buf, '[')
	for i, e := range elems {
		if i > 0 {
			buf = append(buf, ',')
		}
		var err error
		if buf, err = c.appendValue(buf, p.elem, e); err != nil {
			return buf, err
		}
	}
	return append(buf, ']'), nil
}

func str(v json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("%w: want a string, got %.20s", errValue, v)
	}
	return s, nil
}

// number reads a JSON number or the strings NaN, Infinity, -Infinity (and
// a numeric's decimal string, for double mode).
func number(v json.RawMessage) (float64, error) {
	if v[0] == '"' {
		s, err := str(v)
		if err != nil {
			return 0, err
		}
		switch s {
		case "NaN":
			return math.NaN(), nil
		case "Infinity":
			return math.Inf(1), nil
		case "-Infinity":
			return math.Inf(-1), nil
		}
		return strconv.ParseFloat(s, 64)
	}
	return strconv.ParseFloat(string(v), 64)
}

// decimal is an exact decimal: unscaled × 10^-scale.
type decimal struct {
	unscaled *big.Int
	scale    int
}

// parseDecimal reads a decimal string; ok is false for NaN, ±Infinity
// and anything else that is not a plain decimal.
func parseDecimal(s string) (decimal, bool) {
	intPart, frac, _ := strings.Cut(s, ".")
	u, ok := new(big.Int).SetString(intPart+frac, 10)
	if !ok {
		return decimal{}, false
	}
	return decimal{unscaled: u, scale: len(frac)}, true
}

// rescale returns the unscaled value at scale (Debezium rescales to the
// column's scale; Postgres already prints numeric(p,s) with s digits).
func (d decimal) rescale(scale int) *big.Int {
	u := new(big.Int).Set(d.unscaled)
	ten := big.NewInt(10)
	for s := d.scale; s < scale; s++ {
		u.Mul(u, ten)
	}
	for s := d.scale; s > scale; s-- {
		u.Quo(u, ten)
	}
	return u
}

func (d decimal) String() string {
	neg := d.unscaled.Sign() < 0
	digits := new(big.Int).Abs(d.unscaled).String()
	if d.scale > 0 {
		for len(digits) <= d.scale {
			digits = "0" + digits
		}
		digits = digits[:len(digits)-d.scale] + "." + digits[len(digits)-d.scale:]
	}
	if neg {
		return "-" + digits
	}
	return digits
}

// moneyDigits strips a money's currency symbol and group separators:
// "-$1,234.11" → "-1234.11" (lc_monetary C or en_US).
func moneyDigits(s string) string {
	var b strings.Builder
	neg := strings.HasPrefix(s, "-") || strings.HasPrefix(s, "(")
	if neg {
		b.WriteByte('-')
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c >= '0' && c <= '9') || c == '.' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// bitsLittleEndian turns a bit string into BitSet.toByteArray of the
// number it spells: little-endian, trailing zero bytes dropped.
func bitsLittleEndian(s string) []byte {
	n := len(s)
	out := make([]byte, (n+7)/8)
	for i := 0; i < n; i++ {
		if s[n-1-i] == '1' {
			out[i/8] |= 1 << (i % 8)
		}
	}
	return bytes.TrimRight(out, "\x00")
}

// dateInfinity is what Debezium writes for date 'infinity' and
// '-infinity': the epoch day of PostgresValueConverter's
// POSITIVE_INFINITY_LOCAL_DATE (-5877611-06-21) and
// NEGATIVE_INFINITY_LOCAL_DATE (-5877611-06-22).
func dateInfinity(s string) int64 {
	day := 21
	if s == "-infinity" {
		day = 22
	}
	return dateTime{year: -5877611, month: 6, day: day}.epochDay()
}

func parsePoint(s string) (float64, float64, error) {
	in, ok := strings.CutPrefix(s, "(")
	in, ok2 := strings.CutSuffix(in, ")")
	xs, ys, ok3 := strings.Cut(in, ",")
	if !ok || !ok2 || !ok3 {
		return 0, 0, fmt.Errorf("%w: point", errValue)
	}
	x, err1 := strconv.ParseFloat(xs, 64)
	y, err2 := strconv.ParseFloat(ys, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%w: point", errValue)
	}
	return x, y, nil
}

// pointWKB is the little-endian WKB of a 2D point, as Debezium's
// Point.createValue computes it.
func pointWKB(x, y float64) []byte {
	b := make([]byte, 21)
	b[0] = 1
	binary.LittleEndian.PutUint32(b[1:], 1)
	binary.LittleEndian.PutUint64(b[5:], math.Float64bits(x))
	binary.LittleEndian.PutUint64(b[13:], math.Float64bits(y))
	return b
}

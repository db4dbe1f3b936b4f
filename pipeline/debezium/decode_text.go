package debezium

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The renderings cdcsync gives values (Postgres' text under capture's
// session settings), rebuilt from Debezium's encodings.

// civil splits epoch microseconds into a UTC date and time.
func civil(micros int64) (t time.Time, us int) {
	sec := floorDiv(micros, 1_000_000)
	return time.Unix(sec, 0).UTC(), int(floorMod(micros, 1_000_000))
}

// appendPgDate writes a date as Postgres prints it: "2016-11-04", years
// before 1 as "0044-03-15 BC" (the BC suffix is added by the caller).
func appendPgDate(buf []byte, t time.Time) ([]byte, bool) {
	y, bc := t.Year(), false
	if y <= 0 {
		y, bc = 1-y, true
	}
	buf = appendPad(buf, y, 4)
	buf = append(buf, '-')
	buf = appendPad(buf, int(t.Month()), 2)
	buf = append(buf, '-')
	return appendPad(buf, t.Day(), 2), bc
}

func appendDate(buf []byte, days int64) []byte {
	buf, bc := appendPgDate(buf, time.Unix(days*86400, 0).UTC())
	if bc {
		buf = append(buf, " BC"...)
	}
	return buf
}

func appendClock(buf []byte, t time.Time, us int) []byte {
	buf = appendPad(buf, t.Hour(), 2)
	buf = append(buf, ':')
	buf = appendPad(buf, t.Minute(), 2)
	buf = append(buf, ':')
	buf = appendPad(buf, t.Second(), 2)
	return appendTrimmedFraction(buf, us)
}

// appendTimeOfDay writes microseconds since midnight; 24:00:00 stays.
func appendTimeOfDay(buf []byte, micros int64) []byte {
	if micros == 86_400_000_000 {
		return append(buf, "24:00:00"...)
	}
	t, us := civil(micros)
	return appendClock(buf, t, us)
}

// appendLocalTimestamp writes a timestamp without zone as cdcsync does:
// "2016-11-04T13:51:30.123456", or Postgres' text for BC.
func appendLocalTimestamp(buf []byte, micros int64) []byte {
	t, us := civil(micros)
	buf, bc := appendPgDate(buf, t)
	if bc {
		buf = append(buf, ' ')
		buf = appendClock(buf, t, us)
		return append(buf, " BC"...)
	}
	buf = append(buf, 'T')
	return appendClock(buf, t, us)
}

// trimZoned turns ZonedTimestamp's text into cdcsync's: no '+' before
// long years, no trailing zeros in the fraction, Postgres' text for BC.
func trimZoned(s string) string {
	if s == "infinity" || s == "-infinity" {
		return s
	}
	dt, err := parseDateTime(strings.TrimPrefix(s, "+"))
	if strings.HasPrefix(s, "-") {
		// A negative (astronomical) year: Postgres prints it BC.
		dt, err = parseDateTime(s[1:])
		dt.year = -dt.year
	}
	if err != nil {
		return s
	}
	t, us := civil(dt.epochMicros())
	buf, bc := appendPgDate(nil, t)
	if bc {
		buf = append(buf, ' ')
		buf = appendClock(buf, t, us)
		return string(append(buf, "+00 BC"...))
	}
	buf = append(buf, 'T')
	buf = appendClock(buf, t, us)
	return string(append(buf, 'Z'))
}

// compactInterval turns Interval's "P1Y0M3DT0H0M0S" into Postgres'
// iso_8601 output, which leaves zero fields out ("P1Y3D"; "PT0S").
func compactInterval(s string) string {
	iv, err := parseISOInterval(s)
	if err != nil {
		return s
	}
	var b strings.Builder
	b.WriteByte('P')
	for _, f := range []struct {
		n    int
		unit string
	}{{iv.years, "Y"}, {iv.months, "M"}, {iv.days, "D"}} {
		if f.n != 0 {
			fmt.Fprintf(&b, "%d%s", f.n, f.unit)
		}
	}
	sec := strings.TrimRight(strings.TrimRight(iv.seconds, "0"), ".")
	if !strings.Contains(iv.seconds, ".") {
		sec = iv.seconds
	}
	if iv.hours != 0 || iv.minutes != 0 || (sec != "0" && sec != "" && sec != "-0") {
		b.WriteByte('T')
		if iv.hours != 0 {
			fmt.Fprintf(&b, "%dH", iv.hours)
		}
		if iv.minutes != 0 {
			fmt.Fprintf(&b, "%dM", iv.minutes)
		}
		if sec != "0" && sec != "" && sec != "-0" {
			b.WriteString(sec + "S")
		}
	}
	if b.Len() == 1 {
		return "PT0S"
	}
	return b.String()
}

// hstoreText turns a map-mode hstore back into hstore's text output:
// keys ordered by length and then bytes, as hstore stores them.
func hstoreText(v json.RawMessage) (json.RawMessage, error) {
	var m map[string]*string
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("hstore: %w", err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		return strings.Compare(a, b)
	})
	var b strings.Builder
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(`"` + esc.Replace(k) + `"=>`)
		if m[k] == nil {
			b.WriteString("NULL")
		} else {
			b.WriteString(`"` + esc.Replace(*m[k]) + `"`)
		}
	}
	return quote(b.String()), nil
}

package debezium

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Sentinels Debezium writes for timestamp infinity (PGStatement's
// DATE_POSITIVE_INFINITY / DATE_NEGATIVE_INFINITY, as
// AbstractRecordsProducerTest.schemaAndValuesForDateTimeTypes expects for
// ts_pinf and ts_ninf).
const (
	tsPosInfinity = 9223372036825200000
	tsNegInfinity = -9223372036832400000
)

// dateTime is a date and time of day as Postgres prints it, in the
// proleptic Gregorian calendar Java's time API uses (year 0 is 1 BC).
type dateTime struct {
	year, month, day   int
	hour, min, sec     int
	micros             int // fraction of the second
	fracDigits         int // digits printed in the fraction
	offset             int // seconds east of UTC, when hasOffset
	hasOffset, hasTime bool
}

// parseDateTime reads cdcsync's renderings of date, timestamp and
// timestamptz: "2016-11-04", "2016-11-04T13:51:30.123456",
// "2016-11-04T11:51:30.123456Z", and what Postgres prints for the values
// ISO 8601 cannot express ("4713-12-31 23:59:59.999999 BC",
// "0044-03-15 12:00:00+00 BC").
func parseDateTime(s string) (dateTime, error) {
	var dt dateTime
	bc := false
	if rest, ok := strings.CutSuffix(s, " BC"); ok {
		bc, s = true, rest
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i < 4 || i+6 > len(s) || s[i] != '-' || s[i+3] != '-' {
		return dt, fmt.Errorf("malformed date %q", s)
	}
	dt.year, _ = strconv.Atoi(s[:i])
	dt.month, _ = strconv.Atoi(s[i+1 : i+3])
	dt.day, _ = strconv.Atoi(s[i+4 : i+6])
	if bc {
		dt.year = 1 - dt.year
	}
	rest := s[i+6:]
	if rest == "" {
		return dt, nil
	}
	if rest[0] != 'T' && rest[0] != ' ' {
		return dt, fmt.Errorf("malformed timestamp %q", s)
	}
	t, err := parseTimeOfDay(rest[1:])
	if err != nil {
		return dt, fmt.Errorf("timestamp %q: %w", s, err)
	}
	dt.hasTime = true
	dt.hour, dt.min, dt.sec, dt.micros, dt.fracDigits = t.hour, t.min, t.sec, t.micros, t.fracDigits
	dt.offset, dt.hasOffset = t.offset, t.hasOffset
	return dt, nil
}

type timeOfDay struct {
	hour, min, sec, micros, fracDigits int
	offset                             int
	hasOffset                          bool
}

// parseTimeOfDay reads "HH:MM:SS[.ffffff][Z|±HH[:MM[:SS]]]".
func parseTimeOfDay(s string) (timeOfDay, error) {
	var t timeOfDay
	if len(s) < 8 || s[2] != ':' || s[5] != ':' {
		return t, fmt.Errorf("malformed time %q", s)
	}
	var err1, err2, err3 error
	t.hour, err1 = strconv.Atoi(s[0:2])
	t.min, err2 = strconv.Atoi(s[3:5])
	t.sec, err3 = strconv.Atoi(s[6:8])
	if err1 != nil || err2 != nil || err3 != nil {
		return t, fmt.Errorf("malformed time %q", s)
	}
	rest := s[8:]
	if strings.HasPrefix(rest, ".") {
		j := 1
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		frac := rest[1:j]
		t.fracDigits = len(frac)
		for len(frac) < 6 {
			frac += "0"
		}
		t.micros, _ = strconv.Atoi(frac[:6])
		rest = rest[j:]
	}
	switch {
	case rest == "":
	case rest == "Z":
		t.hasOffset = true
	case rest[0] == '+' || rest[0] == '-':
		parts := strings.Split(rest[1:], ":")
		mul := 3600
		for _, p := range parts {
			v, err := strconv.Atoi(p)
			if err != nil || mul == 0 {
				return t, fmt.Errorf("malformed offset %q", rest)
			}
			t.offset += v * mul
			mul /= 60
		}
		if rest[0] == '-' {
			t.offset = -t.offset
		}
		t.hasOffset = true
	default:
		return t, fmt.Errorf("malformed time %q", s)
	}
	return t, nil
}

// epochDay is the number of days from 1970-01-01 to the date.
func (dt dateTime) epochDay() int64 {
	return floorDiv(time.Date(dt.year, time.Month(dt.month), dt.day, 0, 0, 0, 0, time.UTC).Unix(), 86400)
}

// epochMicros is the instant in microseconds since the epoch, the offset
// (if any) applied.
func (dt dateTime) epochMicros() int64 {
	sec := time.Date(dt.year, time.Month(dt.month), dt.day, dt.hour, dt.min, dt.sec, 0, time.UTC).Unix()
	sec -= int64(dt.offset)
	return sec*1_000_000 + int64(dt.micros)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

func floorMod(a, b int64) int64 { return a - floorDiv(a, b)*b }

// appendISOInstant appends the UTC instant micros the way Debezium's
// ZonedTimestamp prints it: java.time's ISO form (a sign on years outside
// 0000-9999) with exactly width fraction digits, then "Z".
func appendISOInstant(buf []byte, micros int64, width int) []byte {
	sec := floorDiv(micros, 1_000_000)
	us := floorMod(micros, 1_000_000)
	t := time.Unix(sec, 0).UTC()
	buf = appendJavaYear(buf, t.Year())
	buf = append(buf, '-')
	buf = appendPad(buf, int(t.Month()), 2)
	buf = append(buf, '-')
	buf = appendPad(buf, t.Day(), 2)
	buf = append(buf, 'T')
	buf = appendPad(buf, t.Hour(), 2)
	buf = append(buf, ':')
	buf = appendPad(buf, t.Minute(), 2)
	buf = append(buf, ':')
	buf = appendPad(buf, t.Second(), 2)
	if width > 0 {
		if width > 6 {
			width = 6
		}
		frac := fmt.Sprintf("%06d", us)
		buf = append(buf, '.')
		buf = append(buf, frac[:width]...)
	}
	return append(buf, 'Z')
}

// appendJavaYear prints a year as java.time's ISO formatters do.
func appendJavaYear(buf []byte, y int) []byte {
	switch {
	case y > 9999:
		buf = append(buf, '+')
		return strconv.AppendInt(buf, int64(y), 10)
	case y < 0:
		buf = append(buf, '-')
		return appendPad(buf, -y, 4)
	}
	return appendPad(buf, y, 4)
}

func appendPad(buf []byte, v, width int) []byte {
	s := strconv.Itoa(v)
	for i := len(s); i < width; i++ {
		buf = append(buf, '0')
	}
	return append(buf, s...)
}

// appendTrimmedFraction appends ".ffffff" without trailing zeros (nothing
// for zero), as java.time's ISO_LOCAL_TIME prints nanos.
func appendTrimmedFraction(buf []byte, micros int) []byte {
	if micros == 0 {
		return buf
	}
	s := strings.TrimRight(fmt.Sprintf("%06d", micros), "0")
	buf = append(buf, '.')
	return append(buf, s...)
}

package debezium

import (
	"fmt"
	"strconv"
	"strings"
)

// interval is a Postgres interval's fields as IntervalStyle iso_8601
// prints them ("P1Y2M3DT4H5M6.78S", each field signed on its own).
type interval struct {
	years, months, days, hours, minutes int
	seconds                             string // decimal, possibly signed
}

func parseISOInterval(s string) (interval, error) {
	var iv interval
	iv.seconds = "0"
	rest, ok := strings.CutPrefix(s, "P")
	if !ok {
		return iv, fmt.Errorf("%w: interval %q", errValue, s)
	}
	inTime := false
	for rest != "" {
		if rest[0] == 'T' {
			inTime, rest = true, rest[1:]
			continue
		}
		j := 0
		for j < len(rest) && (rest[j] == '-' || rest[j] == '+' || rest[j] == '.' || (rest[j] >= '0' && rest[j] <= '9')) {
			j++
		}
		if j == 0 || j == len(rest) {
			return iv, fmt.Errorf("%w: interval %q", errValue, s)
		}
		num, unit := rest[:j], rest[j]
		rest = rest[j+1:]
		if unit == 'S' && inTime {
			iv.seconds = num
			continue
		}
		n, err := strconv.Atoi(num)
		if err != nil {
			return iv, fmt.Errorf("%w: interval %q", errValue, s)
		}
		switch {
		case unit == 'Y' && !inTime:
			iv.years = n
		case unit == 'M' && !inTime:
			iv.months = n
		case unit == 'D' && !inTime:
			iv.days = n
		case unit == 'W' && !inTime:
			iv.days = 7 * n
		case unit == 'H' && inTime:
			iv.hours = n
		case unit == 'M' && inTime:
			iv.minutes = n
		default:
			return iv, fmt.Errorf("%w: interval %q", errValue, s)
		}
	}
	return iv, nil
}

// daysPerMonthAvg is MicroDuration.DAYS_PER_MONTH_AVG.
const daysPerMonthAvg = 365.25 / 12.0

// micros is MicroDuration.durationMicros with Debezium's average month,
// computed in the same order in doubles and truncated to a long.
func (iv interval) micros() int64 {
	secs, _ := strconv.ParseFloat(iv.seconds, 64)
	numberOfDays := float64(iv.years*12+iv.months)*daysPerMonthAvg + float64(iv.days)
	numberOfSeconds := ((numberOfDays*24+float64(iv.hours))*60+float64(iv.minutes))*60 + secs
	return int64(numberOfSeconds * 1e6)
}

// isoString is Interval.toIsoString: every field, the seconds without
// trailing zeros.
func (iv interval) isoString() string {
	sec := iv.seconds
	if strings.Contains(sec, ".") {
		sec = strings.TrimRight(strings.TrimRight(sec, "0"), ".")
	}
	if sec == "" || sec == "-" || sec == "-0" {
		sec = "0"
	}
	return fmt.Sprintf("P%dY%dM%dDT%dH%dM%sS", iv.years, iv.months, iv.days, iv.hours, iv.minutes, sec)
}

// parseHstore reads hstore's text output: "k"=>"v", "k2"=>NULL.
// A nil value is SQL NULL.
func parseHstore(s string) ([]string, []*string, error) {
	var keys []string
	var vals []*string
	i := 0
	skip := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == ',') {
			i++
		}
	}
	quoted := func() (string, error) {
		if i >= len(s) || s[i] != '"' {
			return "", fmt.Errorf("%w: hstore", errValue)
		}
		var b strings.Builder
		for i++; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
				if i < len(s) {
					b.WriteByte(s[i])
				}
			case '"':
				i++
				return b.String(), nil
			default:
				b.WriteByte(s[i])
			}
		}
		return "", fmt.Errorf("%w: hstore", errValue)
	}
	for skip(); i < len(s); skip() {
		k, err := quoted()
		if err != nil {
			return nil, nil, err
		}
		if !strings.HasPrefix(s[i:], "=>") {
			return nil, nil, fmt.Errorf("%w: hstore", errValue)
		}
		i += 2
		if strings.HasPrefix(s[i:], "NULL") {
			i += 4
			keys, vals = append(keys, k), append(vals, nil)
			continue
		}
		v, err := quoted()
		if err != nil {
			return nil, nil, err
		}
		keys, vals = append(keys, k), append(vals, &v)
	}
	return keys, vals, nil
}

// appendHstoreObject writes the pairs as a JSON object in the order the
// java.util.HashMap Debezium builds would iterate them.
func appendHstoreObject(buf []byte, keys []string, vals []*string) []byte {
	buf = append(buf, '{')
	for n, i := range javaHashMapOrder(keys) {
		if n > 0 {
			buf = append(buf, ',')
		}
		buf = appendJacksonString(buf, keys[i])
		buf = append(buf, ':')
		if vals[i] == nil {
			buf = append(buf, "null"...)
		} else {
			buf = appendJacksonString(buf, *vals[i])
		}
	}
	return append(buf, '}')
}

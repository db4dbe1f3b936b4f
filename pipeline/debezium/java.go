package debezium

import (
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
)

// The JVM decides some of the bytes Debezium writes: Jackson prints floats
// with Java's Float/Double.toString, Connect's Decimal is BigInteger's
// two's complement, and maps (hstore, transaction data collections) come
// out in java.util.HashMap order. These helpers reproduce those.

// appendJavaDouble appends v as Jackson writes a double: NaN and the
// infinities as quoted strings (QUOTE_NON_NUMERIC_NUMBERS), other values
// as Double.toString does.
func appendJavaDouble(buf []byte, v float64) []byte {
	return appendJavaFloat(buf, v, 64)
}

// appendJavaFloat32 appends v as Jackson writes a float.
func appendJavaFloat32(buf []byte, v float32) []byte {
	return appendJavaFloat(buf, float64(v), 32)
}

func appendJavaFloat(buf []byte, v float64, bits int) []byte {
	switch {
	case math.IsNaN(v):
		return append(buf, `"NaN"`...)
	case math.IsInf(v, 1):
		return append(buf, `"Infinity"`...)
	case math.IsInf(v, -1):
		return append(buf, `"-Infinity"`...)
	}
	if v == 0 {
		if math.Signbit(v) {
			return append(buf, "-0.0"...)
		}
		return append(buf, "0.0"...)
	}
	// Shortest digits that round-trip, as Java (since JDK 19) prints them.
	e := strconv.FormatFloat(v, 'e', -1, bits) // "-1.2345e+06"
	neg := e[0] == '-'
	if neg {
		e = e[1:]
	}
	mant, expStr, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(expStr)
	digits := strings.Replace(mant, ".", "", 1)
	if neg {
		buf = append(buf, '-')
	}
	abs := math.Abs(v)
	if abs >= 1e-3 && abs < 1e7 {
		// Plain notation with at least one digit after the point.
		point := exp + 1 // digits before the point
		switch {
		case point <= 0:
			buf = append(buf, "0."...)
			for i := 0; i < -point; i++ {
				buf = append(buf, '0')
			}
			return append(buf, digits...)
		case point >= len(digits):
			buf = append(buf, digits...)
			for i := len(digits); i < point; i++ {
				buf = append(buf, '0')
			}
			return append(buf, ".0"...)
		default:
			buf = append(buf, digits[:point]...)
			buf = append(buf, '.')
			return append(buf, digits[point:]...)
		}
	}
	// Computerized scientific notation: d.ddd E exponent.
	buf = append(buf, digits[0])
	buf = append(buf, '.')
	if len(digits) > 1 {
		buf = append(buf, digits[1:]...)
	} else {
		buf = append(buf, '0')
	}
	buf = append(buf, 'E')
	return strconv.AppendInt(buf, int64(exp), 10)
}

// twosComplement returns BigInteger.toByteArray of v: the minimal
// big-endian two's complement bytes (at least one byte).
func twosComplement(v *big.Int) []byte {
	if v.Sign() >= 0 {
		b := v.Bytes()
		if len(b) == 0 || b[0]&0x80 != 0 {
			b = append([]byte{0}, b...)
		}
		return b
	}
	// -v-1 has the complement bits of v.
	m := new(big.Int).Neg(v)
	m.Sub(m, big.NewInt(1))
	b := m.Bytes()
	for i := range b {
		b[i] = ^b[i]
	}
	if len(b) == 0 || b[0]&0x80 == 0 {
		b = append([]byte{0xff}, b...)
	}
	return b
}

// javaStringHash is String.hashCode.
func javaStringHash(s string) int32 {
	var h int32
	for _, c := range utf16.Encode([]rune(s)) {
		h = 31*h + int32(c)
	}
	return h
}

// javaHashMapOrder returns the indexes of keys (distinct, in insertion
// order) in the order a default java.util.HashMap<String,…> iterates them:
// by bucket of the final table, then insertion order within a bucket.
func javaHashMapOrder(keys []string) []int {
	n := 16
	for float64(len(keys)) > 0.75*float64(n) {
		n *= 2
	}
	bucket := make([]int, len(keys))
	for i, k := range keys {
		h := javaStringHash(k)
		spread := h ^ int32(uint32(h)>>16)
		bucket[i] = int(spread) & (n - 1)
	}
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return bucket[a] - bucket[b] })
	return order
}

// appendJacksonString appends s as Jackson's JSON generator writes a
// string: \" \\ and the short escapes \b \t \n \f \r, other control
// characters as \u00XX with upper-case hex, everything else as it is.
func appendJacksonString(buf []byte, s string) []byte {
	const hexUpper = "0123456789ABCDEF"
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b >= 0x20 && b != '"' && b != '\\' {
			continue
		}
		buf = append(buf, s[start:i]...)
		switch b {
		case '"', '\\':
			buf = append(buf, '\\', b)
		case '\b':
			buf = append(buf, '\\', 'b')
		case '\t':
			buf = append(buf, '\\', 't')
		case '\n':
			buf = append(buf, '\\', 'n')
		case '\f':
			buf = append(buf, '\\', 'f')
		case '\r':
			buf = append(buf, '\\', 'r')
		default:
			buf = append(buf, '\\', 'u', '0', '0', hexUpper[b>>4], hexUpper[b&0xF])
		}
		start = i + 1
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

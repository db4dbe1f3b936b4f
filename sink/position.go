package sink

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"

	"github.com/cdcsync/cdcsync/pipeline"
)

// positionKey renders p as 32 lowercase hex digits, commit LSN then change
// LSN, each zero-padded to 16. Byte order of two such strings is stream
// order, which lets the Redis scripts compare positions as strings without
// converting 64-bit LSNs to Lua's doubles.
//
// A position in a source epoch above 0 is "g", the epoch in 8 hex digits,
// then the 32 digits: "g" sorts after every hex digit, so it comes after
// every epoch-0 position (the form stores written before epochs existed
// hold), and epochs compare digit by digit before the LSNs.
func positionKey(p pipeline.Position) string {
	if p.Epoch != 0 {
		var b [41]byte
		b[0] = epochMark
		putHex(b[1:9], uint64(p.Epoch))
		putHex(b[9:25], uint64(p.Commit))
		putHex(b[25:], uint64(p.Change))
		return string(b[:])
	}
	var b [32]byte
	putHex(b[:16], uint64(p.Commit))
	putHex(b[16:], uint64(p.Change))
	return string(b[:])
}

// epochMark starts a stored position with a source epoch above 0.
const epochMark = 'g'

func putHex(dst []byte, v uint64) {
	const digits = "0123456789abcdef"
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = digits[v&0xF]
		v >>= 4
	}
}

// VersionKey is the Redis key holding the position of the last change the
// row cache applied to a row (kept after a delete, as a tombstone).
func VersionKey(schema, table string, key pipeline.Row) string {
	return versionPrefix + schema + "." + table + ":" + pipeline.KeyString(key)
}

// VersionKeyOfRow is the version key beside a row cache key (RowKey).
func VersionKeyOfRow(rowKey string) string {
	return versionPrefix + strings.TrimPrefix(rowKey, rowPrefix)
}

// ParsePositionKey reads a position stored as positionKey renders it.
func ParsePositionKey(s string) (pipeline.Position, error) {
	var epoch uint64
	if len(s) == 41 && s[0] == epochMark {
		var err error
		if epoch, err = strconv.ParseUint(s[1:9], 16, 32); err != nil {
			return pipeline.Position{}, fmt.Errorf("stored position %q: %w", s, err)
		}
		s = s[9:]
	}
	if len(s) != 32 {
		return pipeline.Position{}, fmt.Errorf("stored position %q: want 32 hex digits, after g and an 8-digit epoch when not 0", s)
	}
	commit, err := strconv.ParseUint(s[:16], 16, 64)
	if err != nil {
		return pipeline.Position{}, fmt.Errorf("stored position %q: %w", s, err)
	}
	change, err := strconv.ParseUint(s[16:], 16, 64)
	if err != nil {
		return pipeline.Position{}, fmt.Errorf("stored position %q: %w", s, err)
	}
	return pipeline.Position{Epoch: uint32(epoch), Commit: pglogrepl.LSN(commit), Change: pglogrepl.LSN(change)}, nil
}

// AvailabilityVersionKey is the Redis hash of the availability cache's
// versions, item id → version.
const AvailabilityVersionKey = availabilityVersionKey

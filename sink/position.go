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
func positionKey(p pipeline.Position) string {
	var b [32]byte
	putHex(b[:16], uint64(p.Commit))
	putHex(b[16:], uint64(p.Change))
	return string(b[:])
}

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
	if len(s) != 32 {
		return pipeline.Position{}, fmt.Errorf("stored position %q: want 32 hex digits", s)
	}
	commit, err := strconv.ParseUint(s[:16], 16, 64)
	if err != nil {
		return pipeline.Position{}, fmt.Errorf("stored position %q: %w", s, err)
	}
	change, err := strconv.ParseUint(s[16:], 16, 64)
	if err != nil {
		return pipeline.Position{}, fmt.Errorf("stored position %q: %w", s, err)
	}
	return pipeline.Position{Commit: pglogrepl.LSN(commit), Change: pglogrepl.LSN(change)}, nil
}

// AvailabilityVersionKey is the Redis hash of the availability cache's
// versions, item id → version.
const AvailabilityVersionKey = availabilityVersionKey

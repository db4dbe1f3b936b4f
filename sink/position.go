package sink

import "github.com/cdcsync/cdcsync/pipeline"

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

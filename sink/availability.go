package sink

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// availabilityVersionKey holds, per item, the version of the value in the
// availability cache.
const availabilityVersionKey = "cdcsync:available:version"

// availabilityPrefix starts every availability cache key.
const availabilityPrefix = "inventory:available:"

// AvailabilityKey is the Redis key of an item's availability cache.
func AvailabilityKey(item int64) string {
	return availabilityPrefix + strconv.FormatInt(item, 10)
}

// AvailabilityKeyPattern is the SCAN MATCH pattern of every availability key.
func AvailabilityKeyPattern() string { return escapeGlob(availabilityPrefix) + "*" }

//go:embed available.lua
var availableLua string

// availability maintains the availability cache, the part of Redis that
// belongs to the inventory sink.
type availability struct {
	rdb    redis.UniversalClient
	script *redis.Script
}

func newAvailability(rdb redis.UniversalClient) *availability {
	return &availability{rdb: rdb, script: redis.NewScript(availableLua)}
}

// refresh writes the items' availability in one pipeline, each guarded by
// its version.
func (a *availability) refresh(ctx context.Context, items []itemAvailability) error {
	return runScripts(ctx, a.rdb, a.script, len(items), func(pipe redis.Pipeliner, i int) *redis.Cmd {
		it := items[i]
		return a.script.EvalSha(ctx, pipe, []string{AvailabilityKey(it.item), availabilityVersionKey},
			it.item, it.version, it.available)
	}, func(i int, cmd *redis.Cmd) error {
		if err := cmd.Err(); err != nil {
			return fmt.Errorf("refresh availability of item %d: %w", items[i].item, err)
		}
		return nil
	})
}

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

// refreshChunk is how many items one Redis pipeline refreshes: a refresh
// of many items (a truncate, a warehouse restocking everything) is cut into
// round trips that each stay short.
const refreshChunk = 1000

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

// refusal is a refresh Redis refused because it holds a version at least
// as new: what it holds, to tell a newer refresh from a stale cache.
type refusal struct {
	itemAvailability
	heldVersion int64
	heldValue   string
}

// refresh writes the items' availability, refreshChunk per pipeline, each
// guarded by its version, and returns the refreshes Redis refused.
func (a *availability) refresh(ctx context.Context, items []itemAvailability) ([]refusal, error) {
	return a.write(ctx, items, nil)
}

// write is refresh; replace, when set, gives per item a version Redis may
// hold that is to be overwritten (see available.lua).
func (a *availability) write(ctx context.Context, items []itemAvailability, replace []int64) ([]refusal, error) {
	var refused []refusal
	for start := 0; start < len(items); start += refreshChunk {
		chunk := items[start:min(start+refreshChunk, len(items))]
		err := runScripts(ctx, a.rdb, a.script, len(chunk), func(pipe redis.Pipeliner, i int) *redis.Cmd {
			it := chunk[i]
			args := []any{it.item, it.version, it.available}
			if replace != nil {
				args = append(args, replace[start+i])
			}
			return a.script.EvalSha(ctx, pipe, []string{AvailabilityKey(it.item), availabilityVersionKey}, args...)
		}, func(i int, cmd *redis.Cmd) error {
			res, err := cmd.Slice()
			if err != nil {
				return fmt.Errorf("refresh availability of item %d: %w", chunk[i].item, err)
			}
			if len(res) == 3 && res[0] == int64(0) {
				held, _ := strconv.ParseInt(fmt.Sprint(res[1]), 10, 64)
				refused = append(refused, refusal{itemAvailability: chunk[i], heldVersion: held, heldValue: fmt.Sprint(res[2])})
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return refused, nil
}

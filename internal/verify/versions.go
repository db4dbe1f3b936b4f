package verify

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/sink"
)

// CheckAvailabilityVersions names the check of the availability cache's
// versions (hash cdcsync:available:version, item id -> version).
const CheckAvailabilityVersions = "availability_versions"

// checkAvailabilityVersions checks that every item with an availability
// key has a version, and that no version is ahead of the inventory store's
// (cdcsync_item_version): the sink refuses refreshes older than what Redis
// holds, so a version the store never issued would freeze the item (the
// sink repairs one when a refresh is refused; verify reports it). Redis is
// read before the store, and the store's versions only grow, so a refresh
// in flight never shows as drift.
func (v *Verifier) checkAvailabilityVersions(ctx context.Context, stored []storedItem) (Check, error) {
	c := Check{Name: CheckAvailabilityVersions, Drifts: []Drift{}}
	col := collector{check: &c, max: v.cfg.MaxReport}
	var versioned bool
	if err := v.inv.QueryRow(ctx, `SELECT to_regclass('cdcsync_item_version') IS NOT NULL`).Scan(&versioned); err != nil {
		return c, fmt.Errorf("read availability versions: %w", err)
	}
	for start := 0; start < len(stored); start += redisBatch {
		batch := stored[start:min(start+redisBatch, len(stored))]
		keys := make([]string, len(batch))
		fields := make([]string, len(batch))
		ids := make([]int64, len(batch))
		for i, s := range batch {
			keys[i], fields[i], ids[i] = sink.AvailabilityKey(s.item), itoa(s.item), s.item
		}
		pipe := v.rdb.Pipeline()
		vals := pipe.MGet(ctx, keys...)
		vers := pipe.HMGet(ctx, sink.AvailabilityVersionKey, fields...)
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return c, fmt.Errorf("read availability versions: %w", err)
		}
		storeVersions := map[int64]int64{}
		if versioned {
			rows, _ := v.inv.Query(ctx, `SELECT item_id, version FROM cdcsync_item_version WHERE item_id = ANY($1)`, ids)
			var item, ver int64
			if _, err := pgx.ForEachRow(rows, []any{&item, &ver}, func() error {
				storeVersions[item] = ver
				return nil
			}); err != nil {
				return c, fmt.Errorf("read availability versions: %w", err)
			}
		}
		for i, s := range batch {
			if vals.Val()[i] == nil {
				continue // no availability key: nothing to protect
			}
			c.Compared++
			raw, ok := vers.Val()[i].(string)
			if !ok {
				col.add(Drift{Key: keys[i], Problem: Missing, Fields: []Field{{Name: "(version)", Expected: ptr("the version of the value")}}})
				continue
			}
			held, err := strconv.ParseInt(raw, 10, 64)
			if err != nil {
				col.add(Drift{Key: keys[i], Problem: Differs, Fields: []Field{{Name: "(version)", Expected: ptr("a number"), Actual: ptr(raw)}}})
				continue
			}
			if issued, ok := storeVersions[s.item]; ok && held > issued {
				col.add(Drift{Key: keys[i], Problem: Differs, Fields: []Field{{Name: "(version)",
					Expected: ptr("at most " + itoa(issued) + ", the inventory store's"), Actual: ptr(raw)}}})
			}
		}
	}
	return c, nil
}

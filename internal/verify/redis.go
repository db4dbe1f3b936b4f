package verify

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// scanKeys calls fn for every key matching pattern, SCANning in steps of
// redisBatch so that a big keyspace does not block Redis.
func scanKeys(ctx context.Context, rdb redis.UniversalClient, pattern string, fn func(key string)) error {
	iter := rdb.Scan(ctx, 0, pattern, redisBatch).Iterator()
	for iter.Next(ctx) {
		fn(iter.Val())
	}
	return iter.Err()
}

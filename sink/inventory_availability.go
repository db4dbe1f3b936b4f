package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// queueChunk is how many queued refreshes one drain transaction takes.
const queueChunk = refreshChunk

// queuePoll is how often the queue is drained without a notification: a
// safety net only, every queued refresh also notifies.
const queuePoll = 5 * time.Second

// repair handles refreshes Redis refused. Redis refuses a version it
// already has or passed, which is normal when a newer refresh of the item
// got there first: the store's committed version is then at least what
// Redis holds. Redis holding a version the store has not reached, or the
// store's own version with another value, means the cache was written from
// a store that no longer exists (rebuilt, or restored from a backup): the
// store's current value then replaces it, provided Redis still holds that
// version (a newer refresh landing meanwhile wins). Refusals are never
// ignored without this check.
func (a *inventory) repair(ctx context.Context, refused []refusal) error {
	items := make([]int64, len(refused))
	for i, r := range refused {
		items[i] = r.item
	}
	rows, _ := a.pool.Query(ctx, sqlCurrentAvailability, items)
	current := make(map[int64]itemAvailability, len(items))
	var av itemAvailability
	_, err := pgx.ForEachRow(rows, []any{&av.item, &av.available, &av.version}, func() error {
		current[av.item] = av
		return nil
	})
	if err != nil {
		return fmt.Errorf("inventory read availability: %w", err)
	}
	var fix []itemAvailability
	var replace []int64
	for _, r := range refused {
		cur, ok := current[r.item]
		if !ok {
			continue // the warehouse removed the item
		}
		if r.heldVersion > cur.version || (r.heldVersion == cur.version && r.heldValue != strconv.FormatInt(cur.available, 10)) {
			fix = append(fix, cur)
			replace = append(replace, r.heldVersion)
		}
	}
	if len(fix) == 0 {
		return nil
	}
	a.logger().Warn("the availability cache holds versions this inventory store never issued (was it rebuilt or restored?); replacing them with the store's values",
		"items", len(fix), "example_item", fix[0].item)
	_, err = a.avail.write(ctx, fix, replace)
	return err
}

func (a *inventory) logger() *slog.Logger {
	if a.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.log
}

// availabilityQueue drains cdcsync_availability_queue: the refreshes that
// do not come with an order batch (the warehouse changing on_hand, items a
// truncate changed). It listens on availabilityChannel, so a refresh
// follows within a round trip, and drains on start and every queuePoll, so
// that entries queued while no sink ran (or while the listening connection
// was down) are not left behind. Several sink processes drain side by side
// without taking the same entries.
type availabilityQueue struct {
	inv      *inventory
	log      *slog.Logger
	retryMax time.Duration
}

// run drains until ctx ends, retrying failures with backoff.
func (q *availabilityQueue) run(ctx context.Context) {
	b := newBackoff(200*time.Millisecond, q.retryMax)
	for {
		err := q.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		q.log.Warn("availability refresh queue failed; retrying", "err", err)
		if !b.wait(ctx) {
			return
		}
	}
}

// listen drains the queue whenever notified, until an error or ctx ends.
func (q *availabilityQueue) listen(ctx context.Context) error {
	if err := q.inv.ensureSchema(ctx); err != nil {
		return err
	}
	pooled, err := q.inv.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("inventory store: %w", err)
	}
	// The connection only waits for notifications; it is closed, never
	// returned to the pool, since it keeps listening.
	conn := pooled.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{availabilityChannel}.Sanitize()); err != nil {
		return fmt.Errorf("listen for availability refreshes: %w", err)
	}
	for {
		if err := q.inv.drainQueue(ctx, true); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, queuePoll)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("wait for availability refreshes: %w", err)
		}
	}
}

// drainQueue refreshes queued items, queueChunk per transaction, until the
// queue is empty. With skipLocked it leaves entries another sink is
// draining to that sink (the background drain); without, it waits for
// them, so that on return every entry queued before it started is
// refreshed.
func (a *inventory) drainQueue(ctx context.Context, skipLocked bool) error {
	for {
		n, err := a.drainChunk(ctx, skipLocked)
		if err != nil || n == 0 {
			return err
		}
	}
}

// drainChunk takes up to queueChunk entries, refreshes their items and
// commits their removal only after Redis took the values. It returns the
// number of entries taken.
func (a *inventory) drainChunk(ctx context.Context, skipLocked bool) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("inventory begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	query := sqlDrainQueueWait
	if skipLocked {
		query = sqlDrainQueue
	}
	rows, _ := tx.Query(ctx, query, queueChunk)
	seen := map[int64]bool{}
	var items []itemAvailability
	var (
		item, available, version *int64
		n                        int
	)
	_, err = pgx.ForEachRow(rows, []any{&item, &available, &version}, func() error {
		n++
		if available == nil || seen[*item] {
			return nil // a removed item, or queued twice
		}
		seen[*item] = true
		av := itemAvailability{item: *item, available: *available}
		if version != nil {
			av.version = *version
		}
		items = append(items, av)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("inventory drain availability queue: %w", err)
	}
	if n == 0 {
		return 0, nil
	}
	if err := a.refresh(ctx, items); err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("inventory drain availability queue: %w", err)
	}
	return n, nil
}

package demo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/consistency"
	"github.com/cdcsync/cdcsync/sink"
)

// The read-your-writes probe plays a user of the order service who
// creates an order and then looks at the item's availability. It owns a
// few items of its own (after the generator's), so that it knows exactly
// what their availability must be: on_hand minus one per order it
// created. Each probe commits an order, takes a token
// (consistency.TakeToken), reads the availability from Redis and from the
// inventory store at once (without waiting), then waits for the token on
// each store (consistency.WaitRedis, WaitInventory) and reads again. A read
// that does not show the order yet is stale: without waiting some are,
// after waiting none may be.
const (
	probeItems  = 10
	probeOnHand = 1_000_000_000
	probeEvery  = 100 * time.Millisecond
	probeWait   = 10 * time.Second // longest wait for a token
)

// probeStats are the probe's counts so far.
type probeStats struct {
	Probes int64
	// Stale reads without waiting, and after waiting, per store.
	StaleNoWaitRedis, StaleNoWaitInventory int64
	StaleWaitedRedis, StaleWaitedInventory int64
	// Timeouts counts waits that ran out (no read was made after them).
	Timeouts int64
	// Waits are the token waits' durations, for percentiles.
	waits []time.Duration
}

// waitPercentile returns the p-th percentile (0 < p <= 1) of the waits.
func (s probeStats) waitPercentile(p float64) time.Duration {
	if len(s.waits) == 0 {
		return 0
	}
	w := slices.Clone(s.waits)
	slices.Sort(w)
	return w[min(len(w)-1, int(float64(len(w))*p))]
}

// probe runs the read-your-writes checks.
type probe struct {
	src, inv *pgxpool.Pool
	rdb      redis.UniversalClient
	first    int64 // first probe item id
	mu       sync.Mutex
	stats    probeStats
	orders   [probeItems]int64 // orders created per probe item
}

func newProbe(src, inv *pgxpool.Pool, rdb redis.UniversalClient, generatorItems int) *probe {
	return &probe{src: src, inv: inv, rdb: rdb, first: int64(generatorItems) + 1}
}

// get returns a copy of the counts.
func (p *probe) get() probeStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.waits = slices.Clone(p.stats.waits)
	return s
}

// run probes every probeEvery until ctx ends; it returns nil then, or the
// first error that is not a stale read or a timed-out wait.
func (p *probe) run(ctx context.Context) error {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := p.once(ctx, i%probeItems); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read-your-writes probe: %w", err)
		}
	}
}

// once creates an order of probe item slot and checks the reads.
func (p *probe) once(ctx context.Context, slot int) error {
	item := p.first + int64(slot)
	if _, err := p.src.Exec(ctx, `INSERT INTO public.orders (item_id, quantity, status) VALUES ($1, 1, 'created')`, item); err != nil {
		return fmt.Errorf("create an order: %w", err)
	}
	tok, err := consistency.TakeToken(ctx, p.src)
	if err != nil {
		return err
	}
	p.orders[slot]++
	want := strconv.FormatInt(probeOnHand-p.orders[slot], 10)

	// At once, as a service that does not wait would read.
	redisNow, err := p.readRedis(ctx, item)
	if err != nil {
		return err
	}
	invNow, err := p.readInventory(ctx, item)
	if err != nil {
		return err
	}
	// After waiting for the token on each store.
	start := time.Now()
	redisErr := consistency.WaitRedis(ctx, p.rdb, consistency.SinkInventory, tok, probeWait)
	waited := time.Since(start)
	var redisAfter string
	if redisErr == nil {
		if redisAfter, err = p.readRedis(ctx, item); err != nil {
			return err
		}
	}
	invErr := consistency.WaitInventory(ctx, p.inv, tok, probeWait)
	var invAfter string
	if invErr == nil {
		if invAfter, err = p.readInventory(ctx, item); err != nil {
			return err
		}
	}
	for _, err := range []error{redisErr, invErr} {
		if err != nil && !errors.Is(err, consistency.ErrTimeout) {
			return err
		}
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	s := &p.stats
	s.Probes++
	s.waits = append(s.waits, waited)
	count := func(c *int64, stale bool) {
		if stale {
			*c++
		}
	}
	count(&s.StaleNoWaitRedis, redisNow != want)
	count(&s.StaleNoWaitInventory, invNow != want)
	count(&s.StaleWaitedRedis, redisErr == nil && redisAfter != want)
	count(&s.StaleWaitedInventory, invErr == nil && invAfter != want)
	count(&s.Timeouts, redisErr != nil)
	count(&s.Timeouts, invErr != nil)
	return nil
}

func (p *probe) readRedis(ctx context.Context, item int64) (string, error) {
	v, err := p.rdb.Get(ctx, sink.AvailabilityKey(item)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the availability cache: %w", err)
	}
	return v, nil
}

func (p *probe) readInventory(ctx context.Context, item int64) (string, error) {
	var avail int64
	err := p.inv.QueryRow(ctx, `SELECT on_hand - reserved - shipped FROM inventory_items WHERE item_id = $1`, item).Scan(&avail)
	if err != nil {
		return "", fmt.Errorf("read the inventory store: %w", err)
	}
	return strconv.FormatInt(avail, 10), nil
}

// describe renders the counts for the live view and the summary.
func (s probeStats) describe() string {
	if s.Probes == 0 {
		return "first probe pending"
	}
	pct := func(n int64) string { return fmt.Sprintf("%d (%.0f%%)", n, 100*float64(n)/float64(s.Probes)) }
	return fmt.Sprintf("%s orders created then read; stale without waiting: Redis %s, inventory %s; "+
		"after waiting for the token: Redis %d, inventory %d stale, %d timeouts; Redis wait p50 %s p99 %s",
		count(s.Probes), pct(s.StaleNoWaitRedis), pct(s.StaleNoWaitInventory),
		s.StaleWaitedRedis, s.StaleWaitedInventory, s.Timeouts,
		s.waitPercentile(0.5).Round(100*time.Microsecond), s.waitPercentile(0.99).Round(100*time.Microsecond))
}

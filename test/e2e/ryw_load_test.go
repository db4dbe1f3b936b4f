package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/cdcsync/cdcsync/consistency"
	"github.com/cdcsync/cdcsync/sink"
)

// rywSettings size TestReadYourWritesUnderLoad: short by default (make
// test), the full size with make ryw (CDCSYNC_RYW_DURATION=30s
// CDCSYNC_RYW_CHECKS=5000).
type rywSettings struct {
	duration time.Duration // how long the writers run
	checks   int           // read-after-write checks the probe must do
}

func loadRYWSettings(t *testing.T) rywSettings {
	s := rywSettings{duration: 10 * time.Second, checks: 400}
	if v := os.Getenv("CDCSYNC_RYW_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CDCSYNC_RYW_DURATION: %v", err)
		}
		s.duration = d
	}
	if v := os.Getenv("CDCSYNC_RYW_CHECKS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("CDCSYNC_RYW_CHECKS: %v", err)
		}
		s.checks = n
	}
	return s
}

const (
	probeItemBase = 2000    // probe items are 2001..2000+probers; writers use 1..1000
	probeOnHand   = 1000000 // on_hand of the probe items
	probeIDBase   = 1 << 40 // probe orders' ids: far above the writers' sequence
	probers       = 12
	probeWait     = 60 * time.Second // a wait longer than any fault here lasts
)

// probeCounts are what the probe saw, per store, without waiting and
// after waiting on the token.
type probeCounts struct {
	checks                   atomic.Int64
	staleNoWait, staleWaited [3]atomic.Int64 // availability, inventory store, row cache
	timeouts                 atomic.Int64
	mu                       sync.Mutex
	examples                 []string
}

var probeStores = [3]string{"availability cache (Redis)", "inventory store", "row cache (Redis)"}

func (c *probeCounts) example(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.examples) < 10 {
		c.examples = append(c.examples, fmt.Sprintf(format, args...))
	}
}

// TestReadYourWritesUnderLoad is issue 15's read-after-write test: four
// writers at about 500 transactions a second, and a probe that creates
// an order, takes its token, reads its item's availability, reserved
// stock and the order's row at once (counting stale reads: the problem),
// then waits on the token in each store and reads again: after the wait
// nothing may be stale. Capture is SIGKILLed and the sinks restarted
// during the run; the waits must still never return early, and no
// applied-through position may ever move backwards.
func TestReadYourWritesUnderLoad(t *testing.T) {
	set := loadRYWSettings(t)
	s := startRYWWith(t, 12, pipelineSetup{captureProcess: true})
	ctx := context.Background()
	s.p.waitCaughtUp(t, 60*time.Second)

	mon := s.monitorApplied(t)
	counts := &probeCounts{}
	wctx, stopWriters := context.WithTimeout(ctx, set.duration)
	defer stopWriters()
	pctx, stopProbe := context.WithTimeout(ctx, 2*set.duration+2*time.Minute)
	defer stopProbe()
	var (
		wg     sync.WaitGroup
		errs   = make(chan error, writers+probers)
		maxID  atomic.Int64
		stats  = &writeStats{}
		seed   = rand.Uint64()
		target = int64(set.checks)
	)
	t.Logf("writer seed %d; %v of writes, %d checks", seed, set.duration, set.checks)
	for i := range writers {
		w := &writer{pool: s.src, rnd: rand.New(rand.NewPCG(seed, uint64(i))), items: items, maxID: &maxID,
			stats: stats, period: 8 * time.Millisecond}
		wg.Go(func() {
			if err := w.run(wctx); err != nil {
				errs <- fmt.Errorf("writer: %w", err)
			}
		})
	}
	for k := range probers {
		wg.Go(func() {
			if err := s.probe(pctx, wctx, k, counts, target); err != nil && pctx.Err() == nil {
				errs <- fmt.Errorf("probe %d: %w", k, err)
				stopProbe()
			}
		})
	}
	// Faults while the writers run: capture dies without a word, later
	// the sinks restart.
	faults := []struct {
		at   float64
		name string
		do   func()
	}{{0.35, "SIGKILL capture", s.p.killCapture}, {0.65, "restart the sinks", s.p.restartSink}}
	start := time.Now()
	for _, f := range faults {
		select {
		case <-time.After(time.Until(start.Add(time.Duration(f.at * float64(set.duration))))):
		case <-wctx.Done():
		}
		t.Logf("%v: %s (%d checks so far)", time.Since(start).Round(time.Millisecond), f.name, counts.checks.Load())
		f.do()
	}
	wg.Wait()
	s.p.stop()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mon.stop(t)

	n := counts.checks.Load()
	t.Logf("writers: %s in %v (%.0f txn/s)", stats, set.duration, float64(stats.total())/set.duration.Seconds())
	t.Logf("%d read-after-write checks; wait timeouts %d", n, counts.timeouts.Load())
	for i, name := range probeStores {
		t.Logf("%-27s stale without waiting %5d (%.1f%%), after waiting %d",
			name, counts.staleNoWait[i].Load(), 100*float64(counts.staleNoWait[i].Load())/float64(max(n, 1)), counts.staleWaited[i].Load())
	}
	for _, ex := range counts.examples {
		t.Log(ex)
	}
	if n < target {
		t.Errorf("the probe did %d checks, want %d", n, target)
	}
	for i, name := range probeStores {
		if v := counts.staleWaited[i].Load(); v != 0 {
			t.Errorf("%s: %d stale reads after waiting on the token", name, v)
		}
	}
	if v := counts.timeouts.Load(); v != 0 {
		t.Errorf("%d waits timed out after %v", v, probeWait)
	}
	var noWait int64
	for i := range probeStores {
		noWait += counts.staleNoWait[i].Load()
	}
	if noWait == 0 {
		t.Errorf("no read without waiting was stale: the probe does not show the problem it claims to solve")
	}
}

// probe runs read-after-write checks on its own item while the writers
// run, and on until the probers together have done target checks.
func (s *rywStores) probe(ctx, writing context.Context, k int, c *probeCounts, target int64) error {
	item := int64(probeItemBase + 1 + k)
	availKey := sink.AvailabilityKey(item)
	for n := int64(1); writing.Err() == nil || c.checks.Load() < target; n++ {
		id := int64(probeIDBase) + int64(k)<<24 + n
		if _, err := s.src.Exec(ctx, `INSERT INTO orders (id, item_id, quantity, status) VALUES ($1, $2, 1, 'created')`, id, item); err != nil {
			return err
		}
		tok, err := consistency.TakeToken(ctx, s.src)
		if err != nil {
			return err
		}
		rowKey := "cdc:public.orders:" + strconv.FormatInt(id, 10)
		fresh, err := s.readProbe(ctx, availKey, item, n, rowKey)
		if err != nil {
			return err
		}
		for i, ok := range fresh {
			if !ok {
				c.staleNoWait[i].Add(1)
			}
		}
		waits := [3]func() error{
			func() error { return consistency.WaitRedis(ctx, s.rdb, consistency.SinkInventory, tok, probeWait) },
			func() error { return consistency.WaitInventory(ctx, s.inv, tok, probeWait) },
			func() error { return consistency.WaitRedis(ctx, s.rdb, consistency.SinkRedis, tok, probeWait) },
		}
		for i, wait := range waits {
			err := wait()
			if errors.Is(err, consistency.ErrTimeout) {
				c.timeouts.Add(1)
				c.example("wait for %s in %s: %v", tok, probeStores[i], err)
				continue
			}
			if err != nil {
				return err
			}
			fresh, err := s.readProbe(ctx, availKey, item, n, rowKey)
			if err != nil {
				return err
			}
			if !fresh[i] {
				c.staleWaited[i].Add(1)
				c.example("stale read after waiting for %s: %s, item %d, order %d", tok, probeStores[i], item, id)
			}
		}
		c.checks.Add(1)
	}
	return nil
}

// readProbe reads what the probe's n-th order must have changed and says,
// per store, whether it is visible: availability on_hand − n, reserved
// n, the order's row.
func (s *rywStores) readProbe(ctx context.Context, availKey string, item, n int64, rowKey string) ([3]bool, error) {
	var fresh [3]bool
	avail, err := s.rdb.Get(ctx, availKey).Int64()
	if err != nil && err.Error() != "redis: nil" {
		return fresh, err
	}
	fresh[0] = err == nil && avail == probeOnHand-n
	var reserved int64
	if err := s.inv.QueryRow(ctx, `SELECT coalesce((SELECT reserved FROM inventory_items WHERE item_id = $1), 0)`, item).Scan(&reserved); err != nil {
		return fresh, err
	}
	fresh[1] = reserved == n
	exists, err := s.rdb.Exists(ctx, rowKey).Result()
	if err != nil {
		return fresh, err
	}
	fresh[2] = exists == 1
	return fresh, nil
}

// appliedMonitor samples every store's applied-through position and
// records any that moved backwards.
type appliedMonitor struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	back   []string
	seen   [3]pglogrepl.LSN
}

func (s *rywStores) monitorApplied(t *testing.T) *appliedMonitor {
	ctx, cancel := context.WithCancel(context.Background())
	m := &appliedMonitor{cancel: cancel, done: make(chan struct{})}
	read := [3]func() (string, error){
		func() (string, error) { return s.rdb.Get(ctx, sink.AppliedKey(consistency.SinkInventory)).Result() },
		func() (string, error) {
			var v string
			err := s.inv.QueryRow(ctx, `SELECT lsn::text FROM cdcsync_applied WHERE sink = 'inventory'`).Scan(&v)
			return v, err
		},
		func() (string, error) { return s.rdb.Get(ctx, sink.AppliedKey(consistency.SinkRedis)).Result() },
	}
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			for i, r := range read {
				v, err := r()
				if err != nil {
					continue // not there yet, or ctx ended
				}
				lsn, err := pglogrepl.ParseLSN(v)
				if err != nil {
					m.record(fmt.Sprintf("%s: applied position %q: %v", probeStores[i], v, err))
					continue
				}
				if lsn < m.seen[i] {
					m.record(fmt.Sprintf("%s: applied position moved back from %s to %s", probeStores[i], m.seen[i], lsn))
				}
				m.seen[i] = max(m.seen[i], lsn)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return m
}

func (m *appliedMonitor) record(s string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.back = append(m.back, s)
}

func (m *appliedMonitor) stop(t *testing.T) {
	t.Helper()
	m.cancel()
	<-m.done
	for _, b := range m.back {
		t.Error(b)
	}
	t.Logf("applied positions at the end: %v", m.seen)
}

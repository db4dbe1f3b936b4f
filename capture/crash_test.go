package capture

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// committedChange is what a writer knows it committed: row id at revision
// rev (rev < 0 for a delete).
type committedChange struct {
	id  int64
	rev int64
}

// TestCaptureSurvivesSIGKILL runs capture as a separate process, kills it
// with SIGKILL twice at random moments while four writers insert, update
// and delete, and checks guarantee 1 and 3: every committed change is on
// Kafka at least once, and per key the events are in commit order; with
// exactly-once delivery (the default) a read_committed reader sees no
// re-sent copy.
func TestCaptureSurvivesSIGKILL(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	bin := buildBinary(t)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, `CREATE TABLE orders (id bigint PRIMARY KEY, item_id bigint NOT NULL, quantity bigint NOT NULL, status text NOT NULL, rev bigint NOT NULL)`)

	cfg := testConfig(e, db)
	cfg.Snapshot = "never"
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	start := func() *testenv.Process {
		return testenv.StartProcess(t, "capture", bin, captureEnv(cfg), "capture")
	}
	proc := start()
	waitFor(t, 30*time.Second, "capture to create its slot", func() bool {
		var n int
		_ = conn.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", cfg.Slot).Scan(&n)
		return n == 1
	})

	var mu sync.Mutex
	var committed []committedChange
	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			wc, err := pgx.Connect(ctx, e.PG.URL(db))
			if err != nil {
				t.Error(err)
				return
			}
			defer wc.Close(ctx)
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			revs := map[int64]int64{} // live ids of this writer -> revision
			var ids []int64
			next := int64(w) * 1_000_000
			for wctx.Err() == nil {
				var c committedChange
				var err error
				switch r := rng.IntN(10); {
				case r < 4 || len(ids) < 5:
					next++
					c = committedChange{next, 1}
					_, err = wc.Exec(ctx, "INSERT INTO orders VALUES ($1, $2, 1, 'created', 1)", next, rng.IntN(100))
					if err == nil {
						revs[next] = 1
						ids = append(ids, next)
					}
				case r < 8:
					id := ids[rng.IntN(len(ids))]
					c = committedChange{id, revs[id] + 1}
					_, err = wc.Exec(ctx, "UPDATE orders SET rev = $2, quantity = quantity + 1 WHERE id = $1", id, c.rev)
					if err == nil {
						revs[id] = c.rev
					}
				default:
					i := rng.IntN(len(ids))
					id := ids[i]
					c = committedChange{id, -1}
					_, err = wc.Exec(ctx, "DELETE FROM orders WHERE id = $1", id)
					if err == nil {
						delete(revs, id)
						ids = append(ids[:i], ids[i+1:]...)
					}
				}
				if err != nil {
					if wctx.Err() == nil {
						t.Error(err)
					}
					return
				}
				mu.Lock()
				committed = append(committed, c)
				mu.Unlock()
			}
		}(w)
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for kill := 0; kill < 2; kill++ {
		time.Sleep(time.Duration(1500+rng.IntN(2000)) * time.Millisecond)
		waitFor(t, 30*time.Second, "capture to produce", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) > 0 })
		if err := proc.Kill(); err != nil {
			t.Fatal(err)
		}
		t.Logf("killed capture (pid %d) with SIGKILL; %d records on the topic", proc.Pid(), topicCount(t, e.Kafka.Brokers(), topic))
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		proc = start()
	}
	time.Sleep(2 * time.Second)
	stopWriters()
	wg.Wait()

	waitAllConfirmed(t, conn, cfg.Slot)
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := proc.Wait(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("capture after SIGTERM: exit %d, %v", code, err)
	}

	// Index what reached Kafka: per id, the revisions seen (rev column,
	// or -1 for a delete), in stream order.
	onKafka := map[int64][]int64{}
	positions := map[int64][]pipeline.Position{}
	msgs := readTopic(t, e.Kafka.Brokers(), topic)
	for _, m := range msgs {
		if m.Event == nil {
			continue
		}
		var id, rev int64
		fmt.Sscan(fmt.Sprint(m.Key["id"]), &id)
		if m.Event.Op == pipeline.OpDelete {
			rev = -1
		} else {
			v, _ := m.Event.After.Get("rev")
			fmt.Sscan(string(v), &rev)
		}
		onKafka[id] = append(onKafka[id], rev)
		positions[id] = append(positions[id], m.Event.Position())
	}
	missing := 0
	for _, c := range committed {
		found := false
		for _, r := range onKafka[c.id] {
			if r == c.rev {
				found = true
				break
			}
		}
		if !found {
			missing++
			if missing <= 5 {
				t.Errorf("committed change id=%d rev=%d is not on Kafka (seen %v)", c.id, c.rev, onKafka[c.id])
			}
		}
	}
	// Commit order per key: apart from re-sent duplicates (a position seen
	// before), positions only grow.
	disorder, dups := 0, 0
	for id, ps := range positions {
		seen := map[pipeline.Position]bool{}
		var maxPos pipeline.Position
		for _, p := range ps {
			if seen[p] {
				dups++
				continue
			}
			seen[p] = true
			if p.Less(maxPos) {
				disorder++
				if disorder <= 5 {
					t.Errorf("id %d: new event at %v after %v", id, p, maxPos)
				}
			}
			maxPos = p
		}
	}
	ids := make([]int64, 0, len(onKafka))
	for id := range onKafka {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	t.Logf("%d committed changes over %d keys; %d records on Kafka, %d re-sent duplicates; missing %d, out of order %d",
		len(committed), len(ids), len(msgs), dups, missing, disorder)
	if missing > 0 || disorder > 0 {
		t.Fatalf("guarantee broken: %d committed changes missing, %d out of commit order", missing, disorder)
	}
	if cfg.Delivery == "exactly-once" && dups > 0 {
		t.Fatalf("%d re-sent duplicates read_committed with exactly-once delivery", dups)
	}
}

// TestCaptureMemoryIsBoundedForHugeTransaction streams one 200,000-row
// transaction and checks the capture process's peak RSS.
func TestCaptureMemoryIsBoundedForHugeTransaction(t *testing.T) {
	const rows = 200000
	rss := peakRSSUnderSlowBroker(t, 5*time.Millisecond, nil, rows,
		fmt.Sprintf(`INSERT INTO orders SELECT g, g %% 1000, 1, 'created', repeat('n', 100) FROM generate_series(1, %d) g`, rows))
	// The transaction is ~70 MB of JSON on Kafka; capture holds at most
	// MAX_IN_FLIGHT (20,000) messages of it, so its peak stays far below.
	const bound = 128 << 20
	t.Logf("peak RSS %.1f MiB for a %d-row transaction (bound %d MiB)", float64(rss)/(1<<20), rows, bound>>20)
	if rss > bound {
		t.Fatalf("peak RSS %d MiB exceeds %d MiB", rss>>20, bound>>20)
	}
}

// TestCaptureMemoryIsBoundedByBytes streams 1 MB rows under a slow broker:
// a count of in-flight messages alone would let hundreds of them (hundreds
// of MB) wait for Kafka; CDCSYNC_MAX_IN_FLIGHT_BYTES bounds them by size
// (issue 10 item 12).
func TestCaptureMemoryIsBoundedByBytes(t *testing.T) {
	const rows = 300 // 300 MB of row values
	const maxInFlightBytes = 16 << 20
	rss := peakRSSUnderSlowBroker(t, 20*time.Millisecond, []string{
		fmt.Sprintf("CDCSYNC_MAX_IN_FLIGHT_BYTES=%d", maxInFlightBytes),
		fmt.Sprintf("CDCSYNC_KAFKA_MAX_MESSAGE_BYTES=%d", 2<<20),
	}, rows, fmt.Sprintf(`INSERT INTO orders SELECT g, g %% 10, 1, 'created', repeat('n', 1000000) FROM generate_series(1, %d) g`, rows))
	// In flight: at most 16 MiB plus one message. The rest is the
	// process's base, the row being decoded and encoded, the producer's
	// request buffers and the GC's headroom.
	const bound = 160 << 20
	t.Logf("peak RSS %.1f MiB for %d rows of 1 MB with CDCSYNC_MAX_IN_FLIGHT_BYTES=%d MiB (bound %d MiB)",
		float64(rss)/(1<<20), rows, maxInFlightBytes>>20, bound>>20)
	if rss > bound {
		t.Fatalf("peak RSS %d MiB exceeds %d MiB", rss>>20, bound>>20)
	}
}

// peakRSSUnderSlowBroker runs capture as a process with the default
// CDCSYNC_MAX_IN_FLIGHT (20,000) and extra variables vars, writes rows with
// insert while every produce request is delayed by delay (so the in-flight
// window stays full: the bound is measured under backpressure, not while
// Kafka keeps up), and returns capture's peak RSS once all are on Kafka.
func peakRSSUnderSlowBroker(t *testing.T, delay time.Duration, vars []string, rows int64, insert string) int64 {
	t.Helper()
	e := testenv.RequireEnv(t, env)
	bin := buildBinary(t)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, ordersDDL)
	cfg := testConfig(e, db)
	cfg.Snapshot = "never"
	cfg.MaxInFlight = 20000
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	proc := testenv.StartProcess(t, "capture", bin, append(captureEnv(cfg), vars...), "capture")
	waitSlotActive(t, conn, cfg.Slot)
	slowBroker(t, e.Kafka.Cluster(), delay)
	mustExec(t, conn, insert)
	waitFor(t, 180*time.Second, "all rows on kafka", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= rows })
	return peakRSSThenStop(t, proc)
}

// peakRSSThenStop reads the capture process's peak RSS while it still runs,
// then stops it with SIGTERM, which must be a clean exit.
func peakRSSThenStop(t *testing.T, proc *testenv.Process) int64 {
	t.Helper()
	rss, err := proc.PeakRSS()
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := proc.Wait(15 * time.Second); err != nil || code != 0 {
		t.Fatalf("exit %d, %v", code, err)
	}
	return rss
}

package exactlyonce

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/outbox"
)

// change is one row change a writer made: rev is the writer's sequence
// number of the statement (unique over the test, so a change is known by
// table, id and rev), -1 for a delete.
type change struct {
	Table string
	ID    int64
	Rev   int64
}

// ledger is what the writers committed and what they rolled back.
type ledger struct {
	mu         sync.Mutex
	committed  []change
	rolledBack []change
	txns       int
	rollbacks  int
	bigTxn     int // changes in the one large transaction, once committed
}

func (l *ledger) commit(cs []change) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.committed = append(l.committed, cs...)
	l.txns++
}

func (l *ledger) rollback(cs []change) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rolledBack = append(l.rolledBack, cs...)
	l.rollbacks++
}

// writer runs multi-statement transactions on both tables over ids of its
// own (so writers never wait for each other): inserts, updates and
// deletes, one to six statements a transaction; one in ten is rolled back.
type writer struct {
	n      int
	conn   *pgx.Conn
	rng    *rand.Rand
	seq    int64
	nextID int64
	live   map[string][]int64 // committed rows of this writer, per table
	outbox *outbox.Publisher
	ledger *ledger
	// big, when set, is the number of rows of one large transaction this
	// writer commits once bigAt has passed.
	big   int
	bigAt time.Time
}

func newWriter(t *testing.T, s *setup, n int, l *ledger) *writer {
	t.Helper()
	pub, err := outbox.New()
	if err != nil {
		t.Fatal(err)
	}
	return &writer{outbox: pub,
		n: n, conn: s.connect(), rng: rand.New(rand.NewPCG(uint64(n), uint64(time.Now().UnixNano()))),
		nextID: int64(n+1) * 1_000_000_000, live: map[string][]int64{}, ledger: l,
	}
}

// run writes until ctx ends; it pauses pause between transactions.
func (w *writer) run(ctx context.Context, pause time.Duration) error {
	for ctx.Err() == nil {
		var err error
		if w.big > 0 && time.Now().After(w.bigAt) {
			err = w.bigTxn(ctx)
			w.big = 0
		} else {
			err = w.txn(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("writer %d: %w", w.n, err)
		}
		time.Sleep(pause)
	}
	return nil
}

// txn runs one transaction and commits or rolls it back.
func (w *writer) txn(ctx context.Context) error {
	// The transaction must not be cut short by ctx: a commit whose
	// outcome is unknown would leave the ledger unsure.
	ctx = context.WithoutCancel(ctx)
	tx, err := w.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var done []change
	live := map[string][]int64{}
	for table, ids := range w.live {
		live[table] = append([]int64(nil), ids...)
	}
	for range 1 + w.rng.IntN(6) {
		table := tables[w.rng.IntN(len(tables))]
		ident := pgx.Identifier{table}.Sanitize()
		w.seq++
		ids := live[table]
		switch r := w.rng.IntN(10); {
		case r < 4 || len(ids) < 3:
			w.nextID++
			_, err = tx.Exec(ctx, "INSERT INTO "+ident+" VALUES ($1, $2, $3, $4)", w.nextID, w.n, w.seq, "created")
			done = append(done, change{table, w.nextID, w.seq})
			live[table] = append(ids, w.nextID)
			if err == nil && table == "orders" {
				err = w.outbox.Publish(ctx, tx, outbox.Event{Aggregate: "order", AggregateID: strconv.FormatInt(w.nextID, 10),
					Type: "OrderCreated", Payload: fmt.Appendf(nil, `{"rev":%d}`, w.seq)})
				done = append(done, change{eventsTable, w.nextID, w.seq})
			}
		case r < 8:
			id := ids[w.rng.IntN(len(ids))]
			_, err = tx.Exec(ctx, "UPDATE "+ident+" SET rev = $2, note = $3 WHERE id = $1", id, w.seq, fmt.Sprintf("updated %d", w.seq))
			done = append(done, change{table, id, w.seq})
		default:
			i := w.rng.IntN(len(ids))
			_, err = tx.Exec(ctx, "DELETE FROM "+ident+" WHERE id = $1", ids[i])
			done = append(done, change{table, ids[i], -1})
			live[table] = append(ids[:i:i], ids[i+1:]...)
		}
		if err != nil {
			return err
		}
	}
	if w.rng.IntN(10) == 0 {
		if err := tx.Rollback(ctx); err != nil {
			return err
		}
		w.ledger.rollback(done)
		return nil
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	w.live = live
	w.ledger.commit(done)
	return nil
}

// bigTxn inserts w.big rows into lines and updates one order in one
// transaction.
func (w *writer) bigTxn(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	tx, err := w.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	first, seq := w.nextID+1, w.seq+1
	if _, err := tx.Exec(ctx, `INSERT INTO lines SELECT $1::bigint + g, $2, $3::bigint + g, 'big' FROM generate_series(0, $4::bigint - 1) g`,
		first, w.n, seq, w.big); err != nil {
		return err
	}
	done := make([]change, 0, w.big+1)
	for i := range int64(w.big) {
		done = append(done, change{"lines", first + i, seq + i})
	}
	w.nextID += int64(w.big)
	w.seq += int64(w.big) + 1
	w.nextID++
	if _, err := tx.Exec(ctx, "INSERT INTO orders VALUES ($1, $2, $3, 'big')", w.nextID, w.n, w.seq); err != nil {
		return err
	}
	done = append(done, change{"orders", w.nextID, w.seq})
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	w.live["orders"] = append(w.live["orders"], w.nextID)
	w.ledger.commit(done)
	w.ledger.mu.Lock()
	w.ledger.bigTxn = len(done)
	w.ledger.mu.Unlock()
	return nil
}

// load is four writers, one of which commits a transaction of bigRows
// rows bigAfter the start, and a sampler of the topics (every 200 ms).
type load struct {
	ledger      *ledger
	sampler     *sampler
	started     time.Time
	stopWriters func()
	stopSampler func()
}

const bigRows = 20_000

func startLoad(t *testing.T, s *setup, bigAfter time.Duration) *load {
	t.Helper()
	ld := &load{ledger: &ledger{}, sampler: newSampler(s.kafka.Brokers(), s.topics), started: time.Now()}
	ld.stopSampler = ld.sampler.run(200 * time.Millisecond)
	t.Cleanup(ld.stopSampler)
	ld.stopWriters = startWriters(t, s, 4, ld.ledger, 2*time.Millisecond, func(w *writer) {
		if w.n == 0 {
			w.big, w.bigAt = bigRows, ld.started.Add(bigAfter)
		}
	})
	return ld
}

// waitBig waits until the large transaction has committed.
func (ld *load) waitBig(t *testing.T, timeout time.Duration) {
	t.Helper()
	testenv.WaitFor(t, timeout, "the large transaction to commit", func() bool {
		ld.ledger.mu.Lock()
		defer ld.ledger.mu.Unlock()
		return ld.ledger.bigTxn > 0
	})
}

// finish stops the writers, waits (up to timeout) until capture has
// confirmed all they wrote, takes a last sample and stops the sampler.
func (ld *load) finish(s *setup, timeout time.Duration) {
	s.t.Helper()
	ld.stopWriters()
	s.waitConfirmed(timeout)
	time.Sleep(500 * time.Millisecond)
	ld.stopSampler()
}

// check reads the topics read_committed and fails the test unless every
// committed change is there exactly once and no sample saw part of a
// transaction; what says what was done to capture.
func (ld *load) check(s *setup, what string) {
	s.t.Helper()
	recs := s.readCommitted()
	x := checkExact(s.t, s, recs, ld.ledger)
	partial := ld.sampler.partial(s.t, groups(recs))
	l := ld.ledger
	l.mu.Lock()
	big := ""
	if l.bigTxn > 0 {
		big = fmt.Sprintf(", one of %d", l.bigTxn)
	}
	s.t.Logf("delivery %s, %s: %d transactions committed (%d changes%s), %d rolled back (%d changes)",
		delivery(), what, l.txns, len(l.committed), big, l.rollbacks, len(l.rolledBack))
	l.mu.Unlock()
	s.t.Logf("read_committed: %v", x)
	s.t.Logf("atomicity: %v; %d transactions seen partly", ld.sampler, partial)
	if !x.exact() || partial > 0 {
		s.t.Fatalf("not exactly once: %v; %d transactions seen partly by a read_committed reader", x, partial)
	}
}

// startWriters runs n writers until the returned stop is called, which
// waits for them.
func startWriters(t *testing.T, s *setup, n int, l *ledger, pause time.Duration, configure func(*writer)) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		w := newWriter(t, s, i, l)
		if configure != nil {
			configure(w)
		}
		wg.Go(func() {
			if err := w.run(ctx, pause); err != nil {
				t.Error(err)
			}
		})
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			wg.Wait()
		}
	}
	t.Cleanup(stop)
	return stop
}

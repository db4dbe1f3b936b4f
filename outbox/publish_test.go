package outbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cdcsync/cdcsync/outbox"
)

// storageMode is one way of configuring the Publisher under test.
type storageMode struct {
	name        string
	table       bool
	deleteAfter bool
}

var storageModes = []storageMode{
	{name: "message"},
	{name: "table", table: true},
	{name: "table-delete-after-insert", table: true, deleteAfter: true},
}

const outboxTable = "outbox_events"

// fixture is one test database with a publisher and a slot reading it.
type fixture struct {
	mode storageMode
	url  string
	conn *pgx.Conn
	pub  *outbox.Publisher
	wal  *walReader
}

func newFixture(t *testing.T, m storageMode) *fixture {
	t.Helper()
	p := requirePG(t)
	ctx := t.Context()
	f := &fixture{mode: m, url: p.URL(p.CreateDB(t))}
	f.conn = connect(t, f.url)
	var opts []outbox.Option
	if m.table {
		opts = append(opts, outbox.WithTable("public", outboxTable))
	}
	if m.deleteAfter {
		opts = append(opts, outbox.WithDeleteAfterInsert())
	}
	var err error
	if f.pub, err = outbox.New(opts...); err != nil {
		t.Fatal(err)
	}
	pubSQL := `CREATE PUBLICATION outbox_test`
	walTable := ""
	if m.table {
		if err := f.pub.CreateTable(ctx, f.conn); err != nil {
			t.Fatal(err)
		}
		pubSQL += ` FOR TABLE ` + pgx.Identifier{"public", outboxTable}.Sanitize()
		walTable = outboxTable
	}
	if _, err := f.conn.Exec(ctx, pubSQL); err != nil {
		t.Fatalf("create publication: %v", err)
	}
	f.wal = newWALReader(t, f.conn, "outbox_test", outbox.DefaultPrefix, walTable)
	return f
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// event builds a valid event whose payload names it, with a fixed id.
func event(aggregateID, label string) outbox.Event {
	return outbox.Event{
		ID:          outbox.NewID(),
		Aggregate:   "order",
		AggregateID: aggregateID,
		Type:        "OrderCreated",
		Payload:     []byte(fmt.Sprintf(`{"label": %q, "quantity": 2}`, label)),
		Headers:     map[string]string{"label": label},
	}
}

func begin(t *testing.T, conn *pgx.Conn) pgx.Tx {
	t.Helper()
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	return tx
}

func (f *fixture) publish(t *testing.T, db outbox.DB, events ...outbox.Event) {
	t.Helper()
	if err := f.pub.Publish(t.Context(), db, events...); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// checkSame fails unless got holds exactly want, in order, with every field
// intact. The table mode's jsonb column normalises the payload's formatting,
// so payloads are compared as JSON there and byte for byte otherwise.
func (f *fixture) checkSame(t *testing.T, got []walEvent, want []outbox.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events from the WAL, want %d:\n got %v\nwant %v", len(got), len(want), labels(got), wantLabels(want))
	}
	for i := range want {
		g, w := got[i].Event, want[i]
		if g.ID != w.ID || g.Aggregate != w.Aggregate || g.AggregateID != w.AggregateID || g.Type != w.Type ||
			!reflect.DeepEqual(g.Headers, w.Headers) {
			t.Fatalf("event %d:\n got %+v\nwant %+v\nall: %v", i, g, w, labels(got))
		}
		if f.mode.table {
			if !sameJSON(t, g.Payload, w.Payload) {
				t.Fatalf("event %d payload %s, want %s", i, g.Payload, w.Payload)
			}
		} else if !bytes.Equal(g.Payload, w.Payload) {
			t.Fatalf("event %d payload %q, want exactly %q", i, g.Payload, w.Payload)
		}
	}
}

func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("payload %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("payload %s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

func labels(evs []walEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.AggregateID + "/" + e.Headers["label"]
	}
	return out
}

func wantLabels(evs []outbox.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.AggregateID + "/" + e.Headers["label"]
	}
	return out
}

// checkTable verifies what stays in the outbox table: every committed event,
// or nothing when rows are deleted right after insert.
func (f *fixture) checkTable(t *testing.T, committed int) {
	t.Helper()
	if !f.mode.table {
		return
	}
	var n int
	if err := f.conn.QueryRow(t.Context(), `SELECT count(*) FROM `+pgx.Identifier{"public", outboxTable}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	want := committed
	if f.mode.deleteAfter {
		want = 0
		if f.wal.deletes != committed {
			t.Errorf("WAL holds %d outbox deletes, want one per committed event (%d)", f.wal.deletes, committed)
		}
	}
	if n != want {
		t.Errorf("outbox table holds %d rows, want %d", n, want)
	}
}

// TestCommittedEventsInCommitOrder interleaves transactions on three
// connections: events appear in the WAL in commit order (not the order they
// were written), rolled-back transactions and savepoints leave nothing.
func TestCommittedEventsInCommitOrder(t *testing.T) {
	for _, m := range storageModes {
		t.Run(m.name, func(t *testing.T) {
			f := newFixture(t, m)
			ctx := t.Context()
			c1, c2, c3 := connect(t, f.url), connect(t, f.url), connect(t, f.url)

			a1, a2, b1, r1 := event("1", "A1"), event("1", "A2"), event("2", "B1"), event("1", "R1")
			tx1 := begin(t, c1)
			f.publish(t, tx1, a1)
			tx2 := begin(t, c2)
			f.publish(t, tx2, b1)
			f.publish(t, tx1, a2)
			tx3 := begin(t, c3)
			f.publish(t, tx3, r1)
			if err := tx2.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if err := tx3.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if err := tx1.Commit(ctx); err != nil {
				t.Fatal(err)
			}

			// A savepoint rolled back inside a committed transaction.
			c1a, r2, c1b := event("3", "C1"), event("3", "R2"), event("3", "C2")
			tx4 := begin(t, c1)
			f.publish(t, tx4, c1a)
			sp, err := tx4.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			f.publish(t, sp, r2)
			if err := sp.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			f.publish(t, tx4, c1b)
			if err := tx4.Commit(ctx); err != nil {
				t.Fatal(err)
			}

			// A transaction that fails after publishing: the caller's
			// rollback takes the event with it.
			r3 := event("3", "R3")
			tx5 := begin(t, c2)
			f.publish(t, tx5, r3)
			if _, err := tx5.Exec(ctx, `SELECT 1/0`); err == nil {
				t.Fatal("division by zero succeeded")
			}
			if err := tx5.Rollback(ctx); err != nil {
				t.Fatal(err)
			}

			got := f.wal.read(t, ctx)
			f.checkSame(t, got, []outbox.Event{b1, a1, a2, c1a, c1b})
			if got[1].Xid != got[2].Xid || got[3].Xid != got[4].Xid || got[0].Xid == got[1].Xid {
				t.Errorf("events of one transaction must share its xid: %+v", got)
			}
			f.checkTable(t, 5)
		})
	}
}

// TestConcurrentTransactionsKeepAggregateOrder runs writers in parallel, one
// aggregate each, some transactions rolled back: per aggregate the WAL holds
// exactly the committed events, in the order they were committed.
func TestConcurrentTransactionsKeepAggregateOrder(t *testing.T) {
	const writers, txPerWriter = 4, 30
	for _, m := range storageModes {
		t.Run(m.name, func(t *testing.T) {
			f := newFixture(t, m)
			ctx := t.Context()
			committed := make([][]outbox.Event, writers)
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := range writers {
				conn := connect(t, f.url)
				wg.Go(func() {
					aggID := fmt.Sprintf("agg-%d", w)
					seq := 0
					for n := range txPerWriter {
						evs := make([]outbox.Event, 1+n%3)
						for i := range evs {
							seq++
							evs[i] = event(aggID, fmt.Sprintf("%d", seq))
						}
						err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
							if err := f.pub.Publish(ctx, tx, evs...); err != nil {
								return err
							}
							if n%4 == 3 {
								return errRollback
							}
							return nil
						})
						switch {
						case errors.Is(err, errRollback):
						case err != nil:
							errs <- err
							return
						default:
							committed[w] = append(committed[w], evs...)
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}

			got := f.wal.read(t, ctx)
			perAgg := map[string][]walEvent{}
			var last walEvent
			for i, e := range got {
				if i > 0 && e.Commit < last.Commit {
					t.Fatalf("commit LSNs go backwards: %s after %s", e.Commit, last.Commit)
				}
				last = e
				perAgg[e.AggregateID] = append(perAgg[e.AggregateID], e)
			}
			total := 0
			for w := range writers {
				aggID := fmt.Sprintf("agg-%d", w)
				f.checkSame(t, perAgg[aggID], committed[w])
				total += len(committed[w])
			}
			if len(got) != total {
				t.Fatalf("WAL holds %d events, want %d", len(got), total)
			}
			f.checkTable(t, total)
		})
	}
}

var errRollback = errors.New("roll back on purpose")

// TestMalformedEventRejectedAtPublish: a malformed event fails Publish with a
// clear error and sends nothing, not even the valid events of the same call;
// the caller's transaction stays usable.
func TestMalformedEventRejectedAtPublish(t *testing.T) {
	for _, m := range storageModes {
		t.Run(m.name, func(t *testing.T) {
			f := newFixture(t, m)
			ctx := t.Context()
			tx := begin(t, f.conn)

			noAggID := event("", "no-aggregate-id")
			err := f.pub.Publish(ctx, tx, event("1", "sent-with-bad-1"), noAggID)
			var ve *outbox.ValidationError
			if !errors.Is(err, outbox.ErrMissingAggregateID) || !errors.As(err, &ve) || ve.Index != 1 {
				t.Fatalf("Publish(missing aggregate id) = %v, want ErrMissingAggregateID at index 1", err)
			}

			notJSON := event("1", "not-json")
			notJSON.Payload = []byte(`{"quantity": 2,}`)
			err = f.pub.Publish(ctx, tx, event("1", "sent-with-bad-2"), notJSON)
			if !errors.Is(err, outbox.ErrInvalidPayload) || !errors.Is(err, outbox.ErrInvalidEvent) {
				t.Fatalf("Publish(payload not JSON) = %v, want ErrInvalidPayload", err)
			}
			t.Logf("error text: %v", err)

			good := event("1", "good")
			f.publish(t, tx, good)
			if err := tx.Commit(ctx); err != nil {
				t.Fatalf("commit after rejected events: %v", err)
			}
			f.checkSame(t, f.wal.read(t, ctx), []outbox.Event{good})
		})
	}
}

// TestPublishOutsideTransaction: given a connection rather than a
// transaction, one Publish call is still all-or-nothing.
func TestPublishOutsideTransaction(t *testing.T) {
	for _, m := range storageModes {
		t.Run(m.name, func(t *testing.T) {
			f := newFixture(t, m)
			ctx := t.Context()
			e1, e2 := event("9", "one"), event("9", "two")
			f.publish(t, f.conn, e1, e2)
			got := f.wal.read(t, ctx)
			f.checkSame(t, got, []outbox.Event{e1, e2})
			if got[0].Xid != got[1].Xid {
				t.Errorf("events of one Publish call in transactions %d and %d, want one", got[0].Xid, got[1].Xid)
			}
			if !m.table || m.deleteAfter {
				return
			}
			// The second insert fails on the duplicate id: the first must
			// go with it.
			e3 := event("9", "three")
			dup := event("9", "dup")
			dup.ID = e3.ID
			err := f.pub.Publish(ctx, f.conn, e3, dup)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.UniqueViolation {
				t.Fatalf("Publish(duplicate id) = %v, want a unique violation", err)
			}
			if got := f.wal.read(t, ctx); len(got) != 0 {
				t.Fatalf("a failed Publish left %v in the WAL", labels(got))
			}
			f.checkTable(t, 2)
		})
	}
}

// TestPublishHonoursContext: a cancelled context fails Publish.
func TestPublishHonoursContext(t *testing.T) {
	f := newFixture(t, storageModes[0])
	ctx, cancel := context.WithTimeout(t.Context(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if err := f.pub.Publish(ctx, f.conn, event("1", "late")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish(expired context) = %v, want context.DeadlineExceeded", err)
	}
}

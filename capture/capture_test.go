package capture

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

func TestCaptureStreamsRowChanges(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, ordersDDL, `INSERT INTO orders VALUES (1, 10, 2, 'created', NULL), (2, 11, 1, 'paid', 'x')`)

	cfg := testConfig(e, db)
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	stop := startCapture(t, cfg)
	waitFor(t, 30*time.Second, "snapshot rows", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 2 })

	mustExec(t, conn,
		`INSERT INTO orders VALUES (3, 12, 5, 'created', 'n')`,
		`UPDATE orders SET status = 'paid' WHERE id = 1`,
		`UPDATE orders SET id = 4 WHERE id = 2`, // primary-key change
		`DELETE FROM orders WHERE id = 3`,
		`TRUNCATE orders`)
	// snapshot 2 + insert + update + (delete+tombstone+create) + (delete+tombstone) + truncate
	waitFor(t, 30*time.Second, "all changes", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 10 })
	if err := stop(); err != nil {
		t.Fatalf("capture stopped with %v", err)
	}

	msgs := readTopic(t, e.Kafka.Brokers(), topic)
	type seen struct {
		op   string
		key  string
		tomb bool
	}
	var got []seen
	byKey := map[string][]message{}
	for _, m := range msgs {
		k := fmt.Sprint(m.Key["id"])
		if m.Event == nil {
			got = append(got, seen{key: k, tomb: true})
		} else {
			got = append(got, seen{op: string(m.Event.Op), key: k})
			if m.Event.Source.Table != "orders" || m.Event.Source.Schema != "public" || m.Event.Source.DB != db {
				t.Errorf("source block %+v", m.Event.Source)
			}
			if pos, err := pipeline.ParsePosition(m.Headers[pipeline.HeaderPosition]); err != nil || pos != m.Event.Position() {
				t.Errorf("position header %q does not match event position %v", m.Headers[pipeline.HeaderPosition], m.Event.Position())
			}
		}
		byKey[k] = append(byKey[k], m)
	}
	count := func(s seen) int {
		n := 0
		for _, g := range got {
			if g == s {
				n++
			}
		}
		return n
	}
	for _, want := range []seen{
		{op: "r", key: "1"}, {op: "r", key: "2"}, {op: "c", key: "3"}, {op: "u", key: "1"},
		{op: "d", key: "2"}, {key: "2", tomb: true}, {op: "c", key: "4"},
		{op: "d", key: "3"}, {key: "3", tomb: true}, {op: "t", key: "<nil>"},
	} {
		if count(want) != 1 {
			t.Errorf("want exactly one %+v, got %d in %+v", want, count(want), got)
		}
	}
	// Per key, the stream order is the commit order.
	for k, ms := range byKey {
		for i := 1; i < len(ms); i++ {
			if ms[i].Partition != ms[0].Partition {
				t.Errorf("key %s spread over partitions", k)
			}
			if ms[i].Event != nil && ms[i-1].Event != nil && ms[i].Event.Position().Less(ms[i-1].Event.Position()) {
				t.Errorf("key %s: event %d older than the one before it", k, i)
			}
		}
	}
	// The update of order 1 carries the whole new row.
	for _, m := range byKey["1"] {
		if m.Event != nil && m.Event.Op == pipeline.OpUpdate {
			if v, _ := m.Event.After.Get("status"); string(v) != `"paid"` {
				t.Errorf("update after.status = %s", v)
			}
		}
	}
	// After a clean stop the slot has confirmed everything that was sent:
	// past the commit record of the last transaction on the topic.
	var lastCommit pglogrepl.LSN
	for _, m := range msgs {
		if m.Event != nil && m.Event.Position().Commit > lastCommit {
			lastCommit = m.Event.Position().Commit
		}
	}
	var confirmed pglogrepl.LSN
	if err := conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", cfg.Slot).Scan(&confirmed); err != nil {
		t.Fatal(err)
	}
	if confirmed <= lastCommit {
		t.Errorf("slot confirmed %s, want past the last commit at %s after a clean shutdown", confirmed, lastCommit)
	}
}

func TestIdleSlotAdvancesWhileOtherDatabasesWrite(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	db := e.PG.CreateDB(t)
	other := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, ordersDDL)
	busy := connect(t, e, other)
	mustExec(t, busy, "CREATE TABLE noise (id serial PRIMARY KEY, payload text)")

	cfg := testConfig(e, db)
	cfg.Snapshot = "never"
	startCapture(t, cfg)
	slotLSN := func() pglogrepl.LSN {
		var lsn pglogrepl.LSN
		err := conn.QueryRow(ctx, "SELECT coalesce(confirmed_flush_lsn, '0/0')::text FROM pg_replication_slots WHERE slot_name = $1", cfg.Slot).Scan(&lsn)
		if err != nil && err != pgx.ErrNoRows {
			t.Fatal(err)
		}
		return lsn
	}
	waitFor(t, 30*time.Second, "slot created", func() bool { return slotLSN() > 0 })
	start := slotLSN()
	// Write a few MB of WAL in another database; the captured table stays idle.
	for i := 0; i < 20; i++ {
		mustExec(t, busy, "INSERT INTO noise (payload) SELECT repeat('x', 200) FROM generate_series(1, 1000)")
	}
	var walNow pglogrepl.LSN
	if err := busy.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&walNow); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "idle slot to advance past the other database's writes", func() bool {
		return slotLSN() >= walNow
	})
	t.Logf("slot advanced from %s to %s (WAL end %s) with no captured change", start, slotLSN(), walNow)
}

func TestInitialSnapshotWithConcurrentWriters(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	const rows = 50000
	mustExec(t, conn, ordersDDL,
		fmt.Sprintf(`INSERT INTO orders SELECT g, g %% 1000, 1, 'created', 'v0' FROM generate_series(1, %d) g`, rows))

	cfg := testConfig(e, db)
	cfg.SnapshotChunkSize = 5000
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")

	// Writers change random rows before, during and after the snapshot.
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
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for n := 0; wctx.Err() == nil; n++ {
				id := 1 + rng.IntN(rows)
				var err error
				switch rng.IntN(10) {
				case 0:
					_, err = wc.Exec(ctx, "DELETE FROM orders WHERE id = $1", id)
				case 1:
					_, err = wc.Exec(ctx, "INSERT INTO orders VALUES ($1, 1, 1, 'created', 'new') ON CONFLICT (id) DO UPDATE SET note = 'reinserted'", id)
				default:
					_, err = wc.Exec(ctx, "UPDATE orders SET quantity = quantity + 1, note = $2 WHERE id = $1", id, fmt.Sprintf("w%d-%d", w, n))
				}
				if err != nil && wctx.Err() == nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	time.Sleep(300 * time.Millisecond)
	stop := startCapture(t, cfg)
	time.Sleep(3 * time.Second)
	stopWriters()
	wg.Wait()
	// The snapshot is read while changes stream: wait for its end too.
	waitFor(t, 120*time.Second, "the initial snapshot to finish", func() bool {
		bfs, err := ListBackfills(ctx, conn, cfg, nil)
		return err == nil && len(bfs) == 1 && bfs[0].Finished()
	})

	var walEnd pglogrepl.LSN
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&walEnd); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "capture to confirm everything written", func() bool {
		var lsn pglogrepl.LSN
		_ = conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", cfg.Slot).Scan(&lsn)
		return lsn >= walEnd
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Latest event per key (by position) must equal the row in Postgres.
	latest := map[string]message{}
	snapshotRows := 0
	for _, m := range readTopic(t, e.Kafka.Brokers(), topic) {
		if m.Event == nil {
			continue
		}
		if m.Event.Op == pipeline.OpRead {
			snapshotRows++
		}
		k := fmt.Sprint(m.Key["id"])
		if prev, ok := latest[k]; !ok || prev.Event.Position().Less(m.Event.Position()) {
			latest[k] = m
		}
	}
	// The snapshot is a backfill: rows changed while their chunk was read
	// come from the stream instead (skipped), every other row is an "r".
	bfs, err := ListBackfills(ctx, conn, cfg, nil)
	if err != nil || len(bfs) != 1 || bfs[0].Status != BackfillDone {
		t.Fatalf("initial snapshot backfills %+v, %v; want one, done", bfs, err)
	}
	if bf := bfs[0]; bf.RowsDone < rows-5000 || int64(snapshotRows) < bf.RowsDone-bf.RowsSkipped {
		t.Errorf("%d snapshot rows on the topic; the snapshot read %d rows (%d skipped) of %d", snapshotRows, bf.RowsDone, bf.RowsSkipped, rows)
	}
	dbRows, err := conn.Query(ctx, "SELECT id, quantity, coalesce(note, '') FROM orders")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{}
	for dbRows.Next() {
		var id, qty int64
		var note string
		if err := dbRows.Scan(&id, &qty, &note); err != nil {
			t.Fatal(err)
		}
		want[fmt.Sprint(id)] = [2]string{fmt.Sprint(qty), `"` + note + `"`}
	}
	if dbRows.Err() != nil {
		t.Fatal(dbRows.Err())
	}
	mismatches := 0
	for k, m := range latest {
		w, exists := want[k]
		deleted := m.Event.Op == pipeline.OpDelete
		switch {
		case exists && deleted, !exists && !deleted:
			mismatches++
			if mismatches < 5 {
				t.Errorf("key %s: latest event op %s, row exists=%v", k, m.Event.Op, exists)
			}
		case exists:
			q, _ := m.Event.After.Get("quantity")
			n, _ := m.Event.After.Get("note")
			if string(q) != w[0] || string(n) != w[1] {
				mismatches++
				if mismatches < 5 {
					t.Errorf("key %s: latest event quantity=%s note=%s, row has %v", k, q, n, w)
				}
			}
		}
	}
	for k := range want {
		if _, ok := latest[k]; !ok {
			mismatches++
			if mismatches < 5 {
				t.Errorf("row %s has no event", k)
			}
		}
	}
	if mismatches > 0 {
		t.Fatalf("%d keys differ from the source", mismatches)
	}
}

func mustExec(t *testing.T, conn *pgx.Conn, sql ...string) {
	t.Helper()
	for _, s := range sql {
		if _, err := conn.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// TestPartitionedTableUsesOneTopic: rows of a partitioned table reach the
// table's topic whether they come from the snapshot or the stream.
func TestPartitionedTableUsesOneTopic(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn,
		`CREATE TABLE orders (id bigint, item_id bigint NOT NULL, quantity bigint NOT NULL, status text NOT NULL, note text, PRIMARY KEY (id)) PARTITION BY RANGE (id)`,
		`CREATE TABLE orders_1 PARTITION OF orders FOR VALUES FROM (0) TO (1000)`,
		`CREATE TABLE orders_2 PARTITION OF orders FOR VALUES FROM (1000) TO (2000)`,
		`INSERT INTO orders VALUES (1, 1, 1, 'created', NULL), (1001, 1, 1, 'created', NULL)`)
	cfg := testConfig(e, db)
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	stop := startCapture(t, cfg)
	waitFor(t, 30*time.Second, "snapshot", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 2 })
	mustExec(t, conn, `INSERT INTO orders VALUES (2, 1, 1, 'created', NULL), (1002, 1, 1, 'created', NULL)`)
	waitFor(t, 30*time.Second, "streamed partition rows on the table topic", func() bool {
		return topicCount(t, e.Kafka.Brokers(), topic) >= 4
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, m := range readTopic(t, e.Kafka.Brokers(), topic) {
		if m.Event != nil && m.Event.Source.Table != "orders" {
			t.Errorf("event names table %q, want orders", m.Event.Source.Table)
		}
	}
}

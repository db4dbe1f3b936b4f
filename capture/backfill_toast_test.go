package capture

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// foldTopic folds the topic's events by key in position order the way a
// consumer that starts empty does: a change replaces the row, except that
// the unchanged TOAST columns it names keep the value held (or stay
// missing when nothing is held); a delete removes it. It returns the rows
// by key (the key's JSON) as column -> raw JSON.
func foldTopic(t *testing.T, brokers []string, topic string) map[string]map[string]string {
	t.Helper()
	msgs := readTopic(t, brokers, topic)
	type keyed struct {
		key string
		m   message
	}
	var evs []keyed
	for _, m := range msgs {
		if m.Event == nil {
			continue
		}
		k, _ := json.Marshal(m.Key)
		evs = append(evs, keyed{string(k), m})
	}
	// Stable order by position: a sink applies newer positions only.
	for i := 1; i < len(evs); i++ {
		for j := i; j > 0 && evs[j].m.Event.Position().Less(evs[j-1].m.Event.Position()); j-- {
			evs[j], evs[j-1] = evs[j-1], evs[j]
		}
	}
	rows := map[string]map[string]string{}
	for _, ev := range evs {
		e := ev.m.Event
		if e.Op == pipeline.OpDelete {
			delete(rows, ev.key)
			continue
		}
		row := map[string]string{}
		for _, c := range e.After {
			row[c.Name] = string(c.Value)
		}
		for _, name := range e.Unchanged {
			if v, ok := rows[ev.key][name]; ok {
				row[name] = v
			}
		}
		rows[ev.key] = row
	}
	return rows
}

// TestBackfillKeepsRowWhoseWindowChangeIsPartial: an update that leaves a
// TOASTed column unchanged commits inside a chunk's window. The stream's
// event lacks that column, so dropping the chunk's row would leave a fresh
// sink (what `replay snapshot` is for) with a partial row; the chunk's row
// must be kept with the update's values over it (issue 10 item 8).
func TestBackfillKeepsRowWhoseWindowChangeIsPartial(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := t.Context()
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, `CREATE TABLE docs (id bigint PRIMARY KEY, status text NOT NULL, body text NOT NULL)`,
		// Stored out of line uncompressed: an update of status leaves
		// body an unchanged TOAST value the stream does not send.
		`ALTER TABLE docs ALTER body SET STORAGE EXTERNAL`,
		`INSERT INTO docs SELECT g, 'new', repeat(md5(g::text), 200) FROM generate_series(1, 50) g`)
	cfg := testConfig(e, db, "public.docs")
	cfg.Snapshot = "never" // a fresh topic: only the backfill brings the rows
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "docs")
	startCapture(t, cfg)
	waitSlotActive(t, conn, cfg.Slot)

	// A writer holds its update open across the chunk's low watermark:
	// the backfill waits for it, so it commits inside the window.
	writer := connect(t, e, db)
	tx, err := writer.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "UPDATE docs SET status = 'edited' WHERE id = 7"); err != nil {
		t.Fatal(err)
	}
	bfs, err := RequestBackfill(ctx, conn, cfg, BackfillRequest{Tables: []string{"public.docs"}, ChunkSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the backfill to wait for the open writer", func() bool {
		var n int
		_ = conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cdcsync-backfill'
			AND query LIKE '%virtualtransaction = ANY%'`).Scan(&n)
		return n > 0
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if bf := bfWaitDone(t, conn, cfg, bfs[0].ID, 60*time.Second); bf.Status != BackfillDone || bf.RowsDone != 50 {
		t.Fatalf("backfill %s after %d rows: %s", bf.Status, bf.RowsDone, bf.Error)
	}
	waitAllConfirmed(t, conn, cfg.Slot)

	got := foldTopic(t, e.Kafka.Brokers(), topic)
	rows, err := conn.Query(ctx, "SELECT id, status, body FROM docs")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n, bad := 0, 0
	for rows.Next() {
		var id int64
		var status, body string
		if err := rows.Scan(&id, &status, &body); err != nil {
			t.Fatal(err)
		}
		n++
		row := got[fmt.Sprintf(`{"id":%d}`, id)]
		st, _ := json.Marshal(status)
		bd, _ := json.Marshal(body)
		if row["status"] != string(st) || row["body"] != string(bd) {
			bad++
			t.Errorf("id %d: a fresh consumer holds status %s and a body of %d bytes (present: %v); the source has %s and %d bytes",
				id, row["status"], len(row["body"]), strings.Contains(fmt.Sprint(row), "body"), st, len(bd))
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != 50 || bad > 0 {
		t.Fatalf("%d of %d rows differ on the topic", bad, n)
	}
}

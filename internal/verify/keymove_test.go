package verify

import (
	"context"
	"strings"
	"testing"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestKeyMoveKeepsToastedColumns: `UPDATE orders SET id = id + 1000` on rows
// with ~6 KB TOASTed columns. With the default replica identity the old
// tuple carries only the key and the new one leaves the TOASTed column out
// as unchanged, yet no row exists under the new key to keep it from: the
// row cache, the inventory store and a consumer that folds the topic by key
// must all hold the whole row under the new key. A table keyed by its
// replica identity index (REPLICA IDENTITY USING INDEX) goes through the
// same pipeline, and verify keys it the same way the events are keyed.
func TestKeyMoveKeepsToastedColumns(t *testing.T) {
	s := newStores(t)
	s.cfg.Tables = []string{"public.orders", "public.people"}
	s.exec(s.src,
		`CREATE TABLE orders (id bigint PRIMARY KEY, item_id bigint, quantity int, status text, note text)`,
		// Out of line and uncompressed, so every note is a TOAST pointer.
		`ALTER TABLE orders ALTER COLUMN note SET STORAGE EXTERNAL`,
		`INSERT INTO orders SELECT g, 1 + g % 5, 1 + g % 3, 'created',
			(SELECT string_agg(md5(g::text || ':' || r::text), '') FROM generate_series(1, 190) r) FROM generate_series(1, 40) g`,
		`CREATE TABLE people (id bigint PRIMARY KEY, email text NOT NULL, bio text)`,
		`CREATE UNIQUE INDEX people_email ON people (email)`,
		`ALTER TABLE people REPLICA IDENTITY USING INDEX people_email`,
		`INSERT INTO people SELECT g, 'p' || g || '@example.com', 'bio ' || g FROM generate_series(1, 10) g`)
	pipelineStart(t, s)
	pipelineWait(t, s)
	s.exec(s.src,
		`UPDATE orders SET id = id + 1000`,
		`UPDATE orders SET status = 'paid' WHERE id % 3 = 0`, // a later update that leaves note unchanged again
		`UPDATE people SET bio = 'new' WHERE id <= 3`,
		`UPDATE people SET email = 'moved' || id || '@example.com' WHERE id IN (4, 5)`,
		`DELETE FROM people WHERE id IN (6, 7)`)
	pipelineWait(t, s)

	r := s.verify()
	if r.Drifted != 0 {
		var lines []string
		for _, c := range r.Checks {
			for _, d := range c.Drifts {
				lines = append(lines, truncate(d.Describe(c.Name), 160)) // not 6 KB values
			}
		}
		t.Errorf("drift after key moves: %d\n%s", r.Drifted, strings.Join(lines[:min(len(lines), 10)], "\n"))
	}

	// A consumer that folds the topic by key: the latest event per key,
	// unchanged columns kept from what the key held before, deletes
	// dropping the key. It must end with every whole row.
	folded := foldTopic(t, s.e.Kafka.Brokers(), pipeline.Topic(s.cfg.TopicPrefix, "public", "orders"))
	conn, err := pgx.Connect(s.ctx, s.e.PG.URL(s.src))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(s.ctx, `SELECT id::text, status, note FROM orders ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	var id, status, note string
	_, err = pgx.ForEachRow(rows, []any{&id, &status, &note}, func() error {
		n++
		got := folded[`{"id":`+id+`}`]
		if got == nil {
			t.Errorf("folded topic: no row under id %s", id)
			return nil
		}
		if got["status"] != status || got["note"] != note {
			t.Errorf("folded topic: id %s has status %q and a note of %d bytes, want %q and %d bytes",
				id, got["status"], len(got["note"]), status, len(note))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(folded) != n {
		t.Errorf("folded topic has %d keys, source %d rows", len(folded), n)
	}
}

// foldTopic reads every record of topic and folds it by key as a simple
// consumer does: partition by partition in offset order, c/r/u replace the
// row except for the columns an event names as unchanged, d and tombstones
// remove it.
func foldTopic(t *testing.T, brokers []string, topic string) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	testenv.ConsumeTopic(t, brokers, topic, func(m *sarama.ConsumerMessage) {
		if pipeline.IsWatermark(m.Headers) || pipeline.IsControl(m.Headers) {
			return // capture's completeness marks, not row events
		}
		key := string(m.Key)
		if m.Value == nil {
			delete(out, key)
			return
		}
		ev, err := pipeline.DecodeEvent(m.Value)
		if err != nil {
			t.Fatalf("%s/%d@%d: %v", topic, m.Partition, m.Offset, err)
		}
		if ev.Op == pipeline.OpDelete {
			delete(out, key)
			return
		}
		row := map[string]string{}
		for _, u := range ev.Unchanged {
			if v, ok := out[key][u]; ok {
				row[u] = v
			}
		}
		for _, c := range ev.After {
			row[c.Name] = pipeline.ScalarText(c.Value)
		}
		out[key] = row
	})
	if len(out) == 0 {
		t.Fatalf("nothing folded from %s", topic)
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

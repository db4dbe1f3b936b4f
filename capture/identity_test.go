package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// runCaptureUntilError runs capture.Run in-process and returns the error it
// stops with by itself; the test fails when it keeps running for 30 s.
func runCaptureUntilError(t *testing.T, cfg config.Capture) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	err := Run(ctx, cfg, logger, nil)
	if ctx.Err() != nil {
		t.Fatalf("capture kept running for 30s (returned %v); want it to refuse", err)
	}
	return err
}

// TestReplicaIdentityIndexKeysEveryEvent: with REPLICA IDENTITY USING INDEX
// on an index other than the primary key, a delete's old tuple carries only
// that index's columns, so every event of the table is keyed by them: the
// key of a row is the same for its insert, update and delete, and never
// holds a null.
func TestReplicaIdentityIndexKeysEveryEvent(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn,
		`CREATE TABLE people (id bigint PRIMARY KEY, email text NOT NULL, name text)`,
		`CREATE UNIQUE INDEX people_email ON people (email)`,
		`ALTER TABLE people REPLICA IDENTITY USING INDEX people_email`,
		`INSERT INTO people VALUES (1, 'a@x', 'A')`)
	cfg := testConfig(e, db, "public.people")
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "people")
	stop := startCapture(t, cfg)
	waitFor(t, 30*time.Second, "snapshot row", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 1 })
	mustExec(t, conn,
		`INSERT INTO people VALUES (2, 'b@x', 'B')`,
		`UPDATE people SET name = 'BB' WHERE id = 2`,
		`DELETE FROM people WHERE id = 2`,
		`UPDATE people SET email = 'a2@x' WHERE id = 1`) // identity change: delete old key, create new
	// r, c, u, d+tombstone, d+tombstone+c
	waitFor(t, 30*time.Second, "all changes", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 8 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range readTopic(t, e.Kafka.Brokers(), topic) {
		key := fmt.Sprint(m.Key)
		if len(m.Key) != 1 || m.Key["email"] == nil {
			t.Errorf("key %s, want {email: ...}", key)
		}
		if m.Event == nil {
			got = append(got, "tombstone "+key)
			continue
		}
		got = append(got, string(m.Event.Op)+" "+key)
		if m.Event.Op == pipeline.OpDelete {
			// The before image holds what the old tuple carried: the
			// identity columns, not nulls for the rest.
			if len(m.Event.Before) != 1 {
				t.Errorf("delete before = %s, want only the identity column", m.Event.Before.AppendJSON(nil))
			}
		}
	}
	joined := strings.Join(got, "; ")
	for _, want := range []string{"r map[email:a@x]", "c map[email:b@x]", "u map[email:b@x]", "d map[email:b@x]",
		"tombstone map[email:b@x]", "d map[email:a@x]", "tombstone map[email:a@x]", "c map[email:a2@x]"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no %q in %s", want, joined)
		}
	}
}

// TestReplicaIdentityNothingRefused: a table whose updates and deletes
// carry no old key (REPLICA IDENTITY NOTHING, or DEFAULT without a primary
// key) makes capture refuse at start, naming the table and the fix.
func TestReplicaIdentityNothingRefused(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, ordersDDL, `ALTER TABLE orders REPLICA IDENTITY NOTHING`)
	err := runCaptureUntilError(t, testConfig(e, db))
	if !errors.Is(err, ErrReplicaIdentity) {
		t.Fatalf("err = %v, want ErrReplicaIdentity", err)
	}
	for _, want := range []string{"public.orders", `ALTER TABLE "public"."orders" REPLICA IDENTITY DEFAULT`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

// TestMovedRowFetcher reads the current values under a moved row's new key
// exactly as the stream prints them; a row gone since, or a column dropped
// or renamed since (capture is behind), leaves the columns unchanged rather
// than failing the stream forever.
func TestMovedRowFetcher(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, `CREATE TABLE docs (id bigint PRIMARY KEY, at timestamptz, note text)`,
		`INSERT INTO docs VALUES (1, '2026-01-02 03:04:05+01', 'hello')`)
	cfg := testConfig(e, db)
	c := &capturer{cfg: cfg}
	moved := &movedRows{connect: c.connect}
	defer moved.close()
	fetch := moved.fetcher(t.Context())
	keyOIDs := []uint32{20} // int8
	vals, found, err := fetch("public", "docs", []string{"id"}, keyOIDs, [][]byte{[]byte("1")}, []string{"note", "at"})
	if err != nil || !found || string(vals[0]) != "hello" || string(vals[1]) != "2026-01-02 02:04:05+00" {
		t.Fatalf("existing row: %q, %v, %v", vals, found, err)
	}
	if _, found, err := fetch("public", "docs", []string{"id"}, keyOIDs, [][]byte{[]byte("2")}, []string{"note"}); found || err != nil {
		t.Errorf("missing row: found %v, err %v", found, err)
	}
	if _, found, err := fetch("public", "docs", []string{"id"}, keyOIDs, [][]byte{[]byte("1")}, []string{"gone"}); found || err != nil {
		t.Errorf("dropped column: found %v, err %v; want not found and no error", found, err)
	}
	// The connection survives a refused query.
	if _, found, err := fetch("public", "docs", []string{"id"}, keyOIDs, [][]byte{[]byte("1")}, []string{"note"}); !found || err != nil {
		t.Errorf("after a refused query: found %v, err %v", found, err)
	}
}

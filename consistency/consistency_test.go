package consistency

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env)) }

func TestTokenText(t *testing.T) {
	tok, err := ParseToken("0/16B3748")
	if err != nil || tok != (Token{LSN: 0x16B3748}) || tok.String() != "0/16B3748" {
		t.Fatalf("ParseToken = %v (%v)", tok, err)
	}
	tok, err = ParseToken("1795600000@0/16B3748")
	if err != nil || tok != (Token{Epoch: 1795600000, LSN: 0x16B3748}) || tok.String() != "1795600000@0/16B3748" {
		t.Fatalf("ParseToken with an epoch = %v (%v)", tok, err)
	}
	// A newer epoch has applied an older epoch's token whatever the LSNs,
	// and never the other way round.
	old, next := Token{LSN: 0x9000}, Token{Epoch: 1795600000, LSN: 0x100}
	if !old.Reached(next) || next.Reached(old) || !next.Reached(next) {
		t.Error("Reached does not order source epochs first")
	}
	if _, err := ParseToken("16B3748"); err == nil {
		t.Error("ParseToken accepted a malformed LSN")
	}
}

// TakeToken is at or after the end of the commit record just written
// (as logical decoding reports it), with synchronous commit on and off.
func TestTakeTokenCoversTheCommit(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	slot := testenv.RandomName("slot")
	if _, err := conn.Exec(ctx, `CREATE TABLE t (id int)`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, slot); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = pool.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot) }()
	for _, sc := range []string{"on", "off"} {
		if _, err := conn.Exec(ctx, "SET synchronous_commit = "+sc); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `INSERT INTO t VALUES (1)`); err != nil {
			t.Fatal(err)
		}
		tok, err := TakeToken(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		// With synchronous_commit off the record reaches decoding once
		// the WAL writer flushed it.
		var end string
		for deadline := time.Now().Add(10 * time.Second); end == ""; {
			err = conn.QueryRow(ctx, `SELECT coalesce(max(lsn)::text, '') FROM pg_logical_slot_get_changes($1, NULL, NULL)
				WHERE data LIKE $2`, slot, "COMMIT%").Scan(&end)
			if err != nil {
				t.Fatal(err)
			}
			if end == "" && time.Now().After(deadline) {
				t.Fatalf("synchronous_commit=%s: the commit never reached logical decoding", sc)
			}
			time.Sleep(20 * time.Millisecond)
		}
		e, _ := ParseToken(end)
		if tok.LSN < e.LSN {
			t.Errorf("synchronous_commit=%s: token %s before the commit's end %s", sc, tok, end)
		}
		t.Logf("synchronous_commit=%s: commit ends at %s, token %s", sc, end, tok)
	}
}

func TestWaitRedis(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	opts, _ := redis.ParseURL(e.Redis.URL())
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	sink := testenv.RandomName("sink")
	key := "cdcsync:applied:" + sink

	// Nothing applied yet: a timeout the caller can tell apart, not early.
	start := time.Now()
	err := WaitRedis(ctx, rdb, sink, Token{LSN: 0x100}, 150*time.Millisecond)
	var te *TimeoutError
	if !errors.Is(err, ErrTimeout) || !errors.As(err, &te) || te.Token != (Token{LSN: 0x100}) || te.Applied != (Token{}) {
		t.Fatalf("WaitRedis with nothing applied = %v, want a *TimeoutError", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("timed out after %v, before 150ms", d)
	}
	// Applied, but not far enough.
	rdb.Set(ctx, key, "0/FF", 0)
	if err := WaitRedis(ctx, rdb, sink, Token{LSN: 0x100}, 50*time.Millisecond); !errors.As(err, &te) || te.Applied != (Token{LSN: 0xFF}) {
		t.Errorf("WaitRedis short of the token = %v, want a timeout reporting 0/FF", err)
	}
	// The position arrives while waiting.
	go func() {
		time.Sleep(100 * time.Millisecond)
		rdb.Set(ctx, key, "0/100", 0)
	}()
	if err := WaitRedis(ctx, rdb, sink, Token{LSN: 0x100}, 10*time.Second); err != nil {
		t.Errorf("WaitRedis once applied = %v", err)
	}
	// The caller's context ends the wait with its own error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := WaitRedis(cctx, rdb, sink, Token{LSN: 0x200}, time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitRedis with a cancelled context = %v", err)
	}
}

func TestWaitInventory(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	if _, err := pool.Exec(ctx, `CREATE TABLE cdcsync_applied (sink text PRIMARY KEY, lsn pg_lsn NOT NULL, updated_at timestamptz NOT NULL);
		INSERT INTO cdcsync_applied VALUES ('inventory', '0/10', now())`); err != nil {
		t.Fatal(err)
	}
	if err := WaitInventory(ctx, pool, Token{LSN: 0x11}, 50*time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Errorf("WaitInventory short of the token = %v, want ErrTimeout", err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		_, _ = pool.Exec(ctx, `UPDATE cdcsync_applied SET lsn = '0/20'`)
	}()
	if err := WaitInventory(ctx, pool, Token{LSN: 0x11}, 10*time.Second); err != nil {
		t.Errorf("WaitInventory once applied = %v", err)
	}
}

// SourceEpoch (and a token's epoch): 0 without capture's state; the
// slot's epoch while the slot is healthy on the server; the next one while
// it is missing (a failover or restore capture has not started over from
// yet); the raised one while capture is about to create the slot again.
func TestSourceEpoch(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	slot := testenv.RandomName("slot")
	check := func(what string, want uint32) {
		t.Helper()
		got, err := SourceEpoch(ctx, pool, WithSlot(slot))
		if err != nil || got != want {
			t.Fatalf("%s: SourceEpoch = %d (%v), want %d", what, got, err, want)
		}
		tok, err := TakeToken(ctx, pool, WithSlot(slot))
		if err != nil || tok.Epoch != want {
			t.Fatalf("%s: token %s (%v), want epoch %d", what, tok, err, want)
		}
	}
	check("no capture state", 0)
	if _, err := pool.Exec(ctx, `CREATE SCHEMA cdcsync; CREATE TABLE cdcsync.capture_state (slot text PRIMARY KEY,
		snapshot_done boolean NOT NULL, consistent_lsn pg_lsn, source_epoch bigint NOT NULL DEFAULT 0)`); err != nil {
		t.Fatal(err)
	}
	check("no record", 0)
	if _, err := pool.Exec(ctx, `INSERT INTO cdcsync.capture_state VALUES ($1, true, '0/100', 1795600000)`, slot); err != nil {
		t.Fatal(err)
	}
	check("slot missing", 1795600001)
	if _, err := pool.Exec(ctx, `UPDATE cdcsync.capture_state SET source_epoch = 1795600500, consistent_lsn = NULL`); err != nil {
		t.Fatal(err)
	}
	check("epoch raised, slot not created yet", 1795600500)
	if _, err := pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, slot); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = pool.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot) }()
	if _, err := pool.Exec(ctx, `UPDATE cdcsync.capture_state SET consistent_lsn = '0/200'`); err != nil {
		t.Fatal(err)
	}
	check("slot healthy", 1795600500)
}

// newPool is a pool on a new database of the test environment, closed
// with the test.
func newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	e := testenv.RequireEnv(t, env)
	pool, err := pgxpool.New(context.Background(), e.PG.URL(e.PG.CreateDB(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

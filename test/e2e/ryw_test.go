package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/consistency"
	"github.com/cdcsync/cdcsync/internal/status"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
	"github.com/cdcsync/cdcsync/sink"
)

// rywStores is one read-your-writes test's order database, inventory
// store and Redis database (its own, so that no other test's applied
// positions are in it), with the pipeline running over them.
type rywStores struct {
	p        *running
	src, inv *pgxpool.Pool
	rdb      *redis.Client
}

func startRYW(t *testing.T, redisDB int, adjust ...func(*config.Capture, *config.Sink)) *rywStores {
	t.Helper()
	return startRYWWith(t, redisDB, pipelineSetup{adjust: adjust})
}

// startRYWWith is startRYW with a pipeline set-up. Items 1..1000 are the
// writers', the probe's come after; every item has plenty of stock.
func startRYWWith(t *testing.T, redisDB int, setup pipelineSetup) *rywStores {
	t.Helper()
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	srcDB, invDB := e.PG.CreateDB(t), e.PG.CreateDB(t)
	mustExec(t, e, srcDB,
		`CREATE TABLE orders (id bigserial PRIMARY KEY, item_id bigint NOT NULL, quantity int NOT NULL,
			status text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())`)
	mustExec(t, e, invDB,
		`CREATE TABLE inventory_items (item_id bigint PRIMARY KEY, on_hand bigint NOT NULL DEFAULT 0,
			reserved bigint NOT NULL DEFAULT 0, shipped bigint NOT NULL DEFAULT 0)`,
		fmt.Sprintf(`INSERT INTO inventory_items (item_id, on_hand) SELECT g, %d FROM generate_series(1, %d) g`, probeOnHand, probeItemBase+probers))
	redisURL := fmt.Sprintf("redis://%s/%d", e.Redis.Addr(), redisDB)
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	setup.adjust = append([]func(*config.Capture, *config.Sink){func(_ *config.Capture, sc *config.Sink) { sc.RedisURL = redisURL }}, setup.adjust...)
	p := startPipelineWith(t, e, srcDB, invDB, setup)
	src, err := pgxpool.New(ctx, e.PG.URL(srcDB))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	inv, err := pgxpool.New(ctx, e.PG.URL(invDB))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inv.Close)
	return &rywStores{p: p, src: src, inv: inv, rdb: rdb}
}

// waitAll waits for tok in every store (row cache, availability cache,
// inventory store) and in the sink process.
func (s *rywStores) waitAll(ctx context.Context, tok consistency.Token, timeout time.Duration) error {
	if err := consistency.WaitRedis(ctx, s.rdb, consistency.SinkRedis, tok, timeout); err != nil {
		return err
	}
	if err := consistency.WaitRedis(ctx, s.rdb, consistency.SinkInventory, tok, timeout); err != nil {
		return err
	}
	return consistency.WaitInventory(ctx, s.inv, tok, timeout)
}

// TestAppliedReachesIdleSourceWAL: with no writes at all, every store's
// applied-through position reaches the order database's current WAL
// position within a heartbeat and 2 seconds, although no change ever
// arrives on the idle partitions.
func TestAppliedReachesIdleSourceWAL(t *testing.T) {
	const heartbeat = 2 * time.Second
	s := startRYW(t, 11, func(cc *config.Capture, _ *config.Sink) { cc.HeartbeatInterval = heartbeat })
	ctx := context.Background()
	// One write, so that the stream has a transaction behind it, then
	// nothing.
	if _, err := s.src.Exec(ctx, `INSERT INTO orders (item_id, quantity, status) VALUES (1, 1, 'created')`); err != nil {
		t.Fatal(err)
	}
	s.p.waitCaughtUp(t, 60*time.Second)
	for round := range 2 {
		tok, err := consistency.TakeToken(ctx, s.src)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := s.waitAll(ctx, tok, heartbeat+2*time.Second); err != nil {
			t.Fatalf("round %d: idle source at %s: %v", round, tok, err)
		}
		t.Logf("round %d: every store applied the idle source's WAL position %s after %v", round, tok, time.Since(start).Round(time.Millisecond))
		if err := s.p.positions.Wait(ctx, pipeline.EpochLSN{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAppliedHTTP: the sink's GET /applied reports each sink's
// applied-through position and lag, answers ?lsn= with 200 once both
// sinks applied it (and the change is then visible), 504 on timeout, and
// 400 for a bad LSN; consistency.WaitHTTP turns those into nil and
// ErrTimeout.
func TestAppliedHTTP(t *testing.T) {
	s := startRYW(t, 13)
	ctx := context.Background()
	srv := httptest.NewServer(s.p.positions.Handler())
	defer srv.Close()
	s.p.waitCaughtUp(t, 60*time.Second)

	var id int64
	if err := s.src.QueryRow(ctx, `INSERT INTO orders (item_id, quantity, status) VALUES (5, 2, 'created') RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	tok, err := consistency.TakeToken(ctx, s.src)
	if err != nil {
		t.Fatal(err)
	}
	if err := consistency.WaitHTTP(ctx, srv.Client(), srv.URL, tok, 30*time.Second); err != nil {
		t.Fatalf("WaitHTTP(%s): %v", tok, err)
	}
	// Both sinks of the process applied it: the row and the stock show it.
	if n := s.rdb.Exists(ctx, fmt.Sprintf("cdc:public.orders:%d", id)).Val(); n != 1 {
		t.Errorf("after /applied?lsn=%s answered 200 the order's row is not in the row cache", tok)
	}
	var reserved int64
	if err := s.inv.QueryRow(ctx, `SELECT reserved FROM inventory_items WHERE item_id = 5`).Scan(&reserved); err != nil || reserved != 2 {
		t.Errorf("after /applied?lsn=%s answered 200 item 5 has reserved %d (%v), want 2", tok, reserved, err)
	}

	resp, err := srv.Client().Get(srv.URL + "/applied")
	if err != nil {
		t.Fatal(err)
	}
	var body consistency.Applied
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /applied: %d, %v", resp.StatusCode, err)
	}
	if len(body.Sinks) != 2 || body.LSN == "" {
		t.Fatalf("GET /applied: %+v, want both sinks with positions", body)
	}
	for _, sa := range body.Sinks {
		lsn, err := consistency.ParseToken(sa.LSN)
		if err != nil || !tok.Reached(lsn) || sa.LagSeconds == nil || *sa.LagSeconds < 0 || *sa.LagSeconds > 30 || sa.SourceTime == nil {
			t.Errorf("GET /applied: sink %+v (%v): want an LSN at or after %s and a lag", sa, err, tok)
		}
	}
	t.Logf("GET /applied: lsn %s, sinks %s %s, %s %s", body.LSN, body.Sinks[0].Sink, body.Sinks[0].LSN, body.Sinks[1].Sink, body.Sinks[1].LSN)

	// A position far ahead of the source: 504 after the timeout.
	far := consistency.Token{Epoch: tok.Epoch, LSN: tok.LSN + 1<<40}
	start := time.Now()
	err = consistency.WaitHTTP(ctx, srv.Client(), srv.URL, far, 300*time.Millisecond)
	var te *consistency.TimeoutError
	if !errors.Is(err, consistency.ErrTimeout) || !errors.As(err, &te) || !tok.Reached(te.Applied) {
		t.Errorf("WaitHTTP(%s) = %v, want ErrTimeout with the applied position", far, err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("WaitHTTP timed out after %v, before its 300ms", d)
	}
	for _, bad := range []string{"lsn=x", "lsn=0/1&timeout=forever", "lsn=0/1&timeout=1h"} {
		resp, err := srv.Client().Get(srv.URL + "/applied?" + bad)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET /applied?%s: %d, want 400", bad, resp.StatusCode)
		}
	}
}

// TestStatusShowsApplied: `cdcsync status` (the collector behind it)
// reports each sink's stores' applied-through positions with their lag in
// time, small once the idle source's position is applied.
func TestStatusShowsApplied(t *testing.T) {
	s := startRYW(t, 14)
	ctx := context.Background()
	if _, err := s.src.Exec(ctx, `INSERT INTO orders (item_id, quantity, status) VALUES (3, 1, 'created')`); err != nil {
		t.Fatal(err)
	}
	s.p.waitCaughtUp(t, 60*time.Second)
	tok, err := consistency.TakeToken(ctx, s.src)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.waitAll(ctx, tok, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	cfg := s.p.statusCfg
	cfg.InventoryURL, cfg.RedisURL = s.p.sinkCfg.InventoryURL, s.p.sinkCfg.RedisURL
	c, err := status.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The source stays idle, so every store reaches its current position
	// within a heartbeat: then the lag is small.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := c.Collect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var stores []string
		done := true
		for _, sk := range r.Sinks {
			for _, a := range sk.Applied {
				stores = append(stores, sk.Name+"/"+a.Store)
				lsn, err := consistency.ParseToken(a.LSN)
				if a.Error != "" || err != nil || !tok.Reached(lsn) || a.LagSeconds == nil || a.SourceTime == nil {
					t.Fatalf("sink %s store %+v: want a position at or after %s with a lag", sk.Name, a, tok)
				}
				// The stores share the source's Postgres server here, so
				// their own writes keep moving its WAL a little.
				done = done && *a.LagSeconds < 2
			}
		}
		if len(stores) != 3 {
			t.Fatalf("applied positions of %v, want inventory store, availability cache and row cache", stores)
		}
		if done {
			var b strings.Builder
			if err := status.WriteText(&b, r); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(b.String(), "APPLIED THROUGH") || !strings.Contains(b.String(), "availability cache") {
				t.Errorf("status text lacks the applied positions:\n%s", b.String())
			}
			t.Logf("status:\n%s", b.String())
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the idle pipeline's stores still lag: %+v", r.Sinks)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAppliedAfterRedisLoss: when Redis loses its data, the row cache's
// applied-through position comes back only with the rows: a deleted row
// is an absent one, so a position claimed over an empty cache would make
// every lost row read as deleted.
func TestAppliedAfterRedisLoss(t *testing.T) {
	s := startRYW(t, 15)
	ctx := context.Background()
	const rows = 300
	if _, err := s.src.Exec(ctx, `INSERT INTO orders (item_id, quantity, status) SELECT 1 + g % 50, 1, 'created' FROM generate_series(1, 300) g`); err != nil {
		t.Fatal(err)
	}
	tok, err := consistency.TakeToken(ctx, s.src)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.waitAll(ctx, tok, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// The idle pipeline keeps writing watermarks; the position must not
	// return before every row has.
	deadline := time.Now().Add(60 * time.Second)
	for {
		v, err := s.rdb.Get(ctx, sink.AppliedKey(consistency.SinkRedis)).Result()
		if err == nil {
			keys, err := s.rdb.Keys(ctx, "cdc:public.orders:*").Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != rows {
				t.Fatalf("the row cache claims applied through %s with %d of %d rows after Redis lost its data", v, len(keys), rows)
			}
			t.Logf("applied through %s again, with all %d rows", v, rows)
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the row cache's applied position did not come back after Redis lost its data")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

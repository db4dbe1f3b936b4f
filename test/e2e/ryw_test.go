package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/consistency"
	"github.com/cdcsync/cdcsync/internal/testenv"
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
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	srcDB, invDB := e.PG.CreateDB(t), e.PG.CreateDB(t)
	mustExec(t, e, srcDB,
		`CREATE TABLE orders (id bigserial PRIMARY KEY, item_id bigint NOT NULL, quantity int NOT NULL,
			status text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())`)
	mustExec(t, e, invDB,
		`CREATE TABLE inventory_items (item_id bigint PRIMARY KEY, on_hand bigint NOT NULL DEFAULT 0,
			reserved bigint NOT NULL DEFAULT 0, shipped bigint NOT NULL DEFAULT 0)`,
		`INSERT INTO inventory_items (item_id, on_hand) SELECT g, 1000000 FROM generate_series(1, 1000) g`)
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
	adjust = append([]func(*config.Capture, *config.Sink){func(_ *config.Capture, sc *config.Sink) { sc.RedisURL = redisURL }}, adjust...)
	p := startPipeline(t, e, srcDB, invDB, adjust...)
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
		if err := s.p.positions.Wait(ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
}

package main

// ryw: read-your-writes wait latency.
//
//	go run ./test/bench ryw [-rate 2000] [-duration 20s] [-sample 20] [-delivery exactly-once]
//
// Capture and both sinks run in this process against throwaway services
// (one Postgres cluster holding the order database and the inventory
// store, Redis, the development broker). Writers create orders at -rate
// transactions a second; every -sample-th transaction takes its token
// right after COMMIT and measures, separately, how long until the token is
// applied in the availability cache (Redis), the row cache (Redis) and the
// inventory store: the latency a writer pays to read its own write.

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/capture"
	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/consistency"
	"github.com/cdcsync/cdcsync/internal/services"
	"github.com/cdcsync/cdcsync/pipeline"
	"github.com/cdcsync/cdcsync/sink"
)

func benchRYW(args []string) error {
	fs := flag.NewFlagSet("ryw", flag.ExitOnError)
	rate := fs.Int("rate", 2000, "writer transactions per second, all writers together")
	duration := fs.Duration("duration", 20*time.Second, "how long to measure (after a 3s warm-up)")
	sample := fs.Int("sample", 20, "measure every n-th transaction")
	delivery := fs.String("delivery", "at-least-once", "capture's CDCSYNC_DELIVERY: at-least-once or exactly-once")
	linger := fs.Duration("linger", 0, "capture's CDCSYNC_KAFKA_LINGER (0: the default)")
	_ = fs.Parse(args)
	ctx := context.Background()

	pg, err := services.StartPostgres()
	if err != nil {
		return err
	}
	defer pg.Close()
	kafka, err := services.StartKafka()
	if err != nil {
		return err
	}
	defer kafka.Close()
	rds, err := services.StartRedis()
	if err != nil {
		return err
	}
	defer rds.Close()
	if err := pg.Exec(ctx, "postgres", "CREATE DATABASE src", "CREATE DATABASE inv"); err != nil {
		return err
	}
	if err := pg.Exec(ctx, "src", `CREATE TABLE orders (id bigserial PRIMARY KEY, item_id bigint NOT NULL,
		quantity int NOT NULL, status text NOT NULL)`); err != nil {
		return err
	}
	if err := pg.Exec(ctx, "inv", `CREATE TABLE inventory_items (item_id bigint PRIMARY KEY, on_hand bigint NOT NULL DEFAULT 0,
		reserved bigint NOT NULL DEFAULT 0, shipped bigint NOT NULL DEFAULT 0)`,
		`INSERT INTO inventory_items (item_id, on_hand) SELECT g, 1000000000 FROM generate_series(1, 1000) g`); err != nil {
		return err
	}
	if err := kafka.CreateTopic(pipeline.Topic("cdc", "public", "orders"), 4); err != nil {
		return err
	}

	var cc config.Capture
	var sc config.Sink
	for _, c := range []any{&cc, &sc} {
		if err := config.Defaults(c); err != nil {
			return err
		}
	}
	cc.SourceURL, cc.Kafka.Brokers, cc.HTTP.Addr = pg.URL("src"), kafka.Brokers(), ""
	cc.Delivery = *delivery
	if *linger > 0 {
		cc.Linger = *linger
	}
	sc.InventoryURL, sc.RedisURL, sc.Kafka.Brokers, sc.HTTP.Addr = pg.URL("inv"), rds.URL(), kafka.Brokers(), ""
	logger := slog.New(slog.DiscardHandler)
	runCtx, stop := context.WithCancel(ctx)
	var daemons sync.WaitGroup
	daemons.Go(func() { _ = capture.Run(runCtx, cc, logger, nil) })
	daemons.Go(func() { _ = sink.Run(runCtx, sc, logger, nil) })
	defer func() { stop(); daemons.Wait() }()

	src, err := pgxpool.New(ctx, pg.URL("src"))
	if err != nil {
		return err
	}
	defer src.Close()
	inv, err := pgxpool.New(ctx, pg.URL("inv"))
	if err != nil {
		return err
	}
	defer inv.Close()
	ropts, err := redis.ParseURL(rds.URL())
	if err != nil {
		return err
	}
	rdb := redis.NewClient(ropts)
	defer rdb.Close()

	// The pipeline is up once a first write is visible everywhere.
	if _, err := src.Exec(ctx, `INSERT INTO orders (item_id, quantity, status) VALUES (1, 1, 'created')`); err != nil {
		return err
	}
	tok, err := consistency.TakeToken(ctx, src)
	if err != nil {
		return err
	}
	if err := waitEverywhere(ctx, rdb, inv, tok, time.Minute); err != nil {
		return fmt.Errorf("pipeline did not start: %w", err)
	}

	m := &rywMeasure{}
	const writers = 16
	wctx, stopWriters := context.WithTimeout(ctx, 3*time.Second+*duration)
	defer stopWriters()
	measureFrom := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	var txns atomic.Int64
	for i := range writers {
		wg.Go(func() {
			period := time.Duration(float64(time.Second) * writers / float64(*rate))
			t := time.NewTicker(period)
			defer t.Stop()
			rnd := rand.New(rand.NewPCG(uint64(i), 7))
			for n := 0; ; n++ {
				select {
				case <-wctx.Done():
					return
				case <-t.C:
				}
				if _, err := src.Exec(wctx, `INSERT INTO orders (item_id, quantity, status) VALUES ($1, 1, 'created')`, 1+rnd.IntN(1000)); err != nil {
					continue // the run is ending
				}
				if time.Now().After(measureFrom) {
					txns.Add(1)
				}
				if n%*sample != 0 || time.Now().Before(measureFrom) {
					continue
				}
				tok, err := consistency.TakeToken(wctx, src)
				if err != nil {
					continue
				}
				m.observe(ctx, rdb, inv, tok)
			}
		})
	}
	wg.Wait()
	m.wg.Wait()

	fmt.Printf("read-your-writes wait latency, token taken -> applied (every %d-th of %d txn/s achieved, target %d, for %v)\n",
		*sample, int(float64(txns.Load())/duration.Seconds()), *rate, *duration)
	for i, name := range rywStores {
		m.print(name, i)
	}
	if n := m.timeouts.Load(); n > 0 {
		fmt.Printf("timeouts (10s): %d\n", n)
	}
	return nil
}

var rywStores = []string{"availability cache (Redis)", "row cache (Redis)", "inventory store (Postgres)"}

// rywMeasure collects the wait latencies per store.
type rywMeasure struct {
	wg       sync.WaitGroup
	mu       sync.Mutex
	lat      [3][]time.Duration
	timeouts atomic.Int64
}

// observe measures, without holding up the writer, how long tok takes to
// be applied in each store.
func (m *rywMeasure) observe(ctx context.Context, rdb *redis.Client, inv *pgxpool.Pool, tok consistency.Token) {
	start := time.Now()
	waits := []func() error{
		func() error { return consistency.WaitRedis(ctx, rdb, consistency.SinkInventory, tok, 10*time.Second) },
		func() error { return consistency.WaitRedis(ctx, rdb, consistency.SinkRedis, tok, 10*time.Second) },
		func() error { return consistency.WaitInventory(ctx, inv, tok, 10*time.Second) },
	}
	for i, wait := range waits {
		m.wg.Go(func() {
			if err := wait(); err != nil {
				m.timeouts.Add(1)
				return
			}
			d := time.Since(start)
			m.mu.Lock()
			m.lat[i] = append(m.lat[i], d)
			m.mu.Unlock()
		})
	}
}

func (m *rywMeasure) print(name string, i int) {
	l := slices.Clone(m.lat[i])
	slices.Sort(l)
	if len(l) == 0 {
		fmt.Printf("%-28s no samples\n", name)
		return
	}
	q := func(p float64) time.Duration {
		return l[min(len(l)-1, int(p*float64(len(l))))].Round(100 * time.Microsecond)
	}
	fmt.Printf("%-28s p50 %-8v p99 %-8v max %-8v (%d samples)\n", name, q(0.50), q(0.99), l[len(l)-1].Round(100*time.Microsecond), len(l))
}

func waitEverywhere(ctx context.Context, rdb *redis.Client, inv *pgxpool.Pool, tok consistency.Token, timeout time.Duration) error {
	if err := consistency.WaitRedis(ctx, rdb, consistency.SinkInventory, tok, timeout); err != nil {
		return err
	}
	if err := consistency.WaitRedis(ctx, rdb, consistency.SinkRedis, tok, timeout); err != nil {
		return err
	}
	return consistency.WaitInventory(ctx, inv, tok, timeout)
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/capture"
	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/status"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/sink"
)

// livePipeline is an order database with capture and both sinks running
// in-process, as the daemons would, for the CLI to work against.
type livePipeline struct {
	e             *testenv.Env
	src, inv      string
	prefix, group string
	slot          string
	rdb           *redis.Client
	statusCfg     config.Status
}

func startLivePipeline(t *testing.T) *livePipeline {
	t.Helper()
	e := startServices(t)
	p := &livePipeline{e: e, src: e.PG.CreateDB(t), inv: e.PG.CreateDB(t),
		prefix: testenv.RandomName("cdc"), group: testenv.RandomName("grp"), slot: testenv.RandomName("slot")}
	p.exec(t, `CREATE TABLE orders (id bigint PRIMARY KEY, item_id bigint, quantity int, status text)`,
		`INSERT INTO orders SELECT g, 1 + g % 20, 1 + g % 4, 'created' FROM generate_series(1, 300) g`)
	p.rdb = redis.NewClient(&redis.Options{Addr: e.Redis.Addr()})
	t.Cleanup(func() { _ = p.rdb.Close() })

	var cc config.Capture
	if err := config.Defaults(&cc); err != nil {
		t.Fatal(err)
	}
	cc.SourceURL = e.PG.URL(p.src)
	cc.Slot, cc.Publication, cc.TopicPrefix = p.slot, p.slot, p.prefix
	cc.HeartbeatInterval, cc.StatusInterval = 500*time.Millisecond, 200*time.Millisecond
	cc.Kafka.Brokers, cc.HTTP.Addr = e.Kafka.Brokers(), ""
	var sc config.Sink
	if err := config.Defaults(&sc); err != nil {
		t.Fatal(err)
	}
	sc.InventoryURL, sc.RedisURL = e.PG.URL(p.inv), e.Redis.URL()
	sc.TopicPrefix, sc.GroupPrefix = p.prefix, p.group
	sc.Kafka.Brokers, sc.HTTP.Addr = e.Kafka.Brokers(), ""
	if err := config.Defaults(&p.statusCfg); err != nil {
		t.Fatal(err)
	}
	p.statusCfg.SourceURL, p.statusCfg.Slot = cc.SourceURL, p.slot
	p.statusCfg.TopicPrefix, p.statusCfg.GroupPrefix = p.prefix, p.group
	p.statusCfg.Kafka.Brokers = e.Kafka.Brokers()

	logger := slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	capDone, sinkDone := make(chan error, 1), make(chan error, 1)
	go func() { capDone <- capture.Run(ctx, cc, logger.With("c", "capture"), nil) }()
	go func() { sinkDone <- sink.Run(ctx, sc, logger.With("c", "sink"), nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-capDone; err != nil {
			t.Errorf("capture: %v", err)
		}
		if err := <-sinkDone; err != nil {
			t.Errorf("sink: %v", err)
		}
	})
	return p
}

func (p *livePipeline) exec(t *testing.T, sql ...string) {
	t.Helper()
	if err := p.e.PG.Exec(context.Background(), p.src, sql...); err != nil {
		t.Fatal(err)
	}
}

// env is the CLI's configuration for this pipeline.
func (p *livePipeline) env(extra ...string) []string {
	return append([]string{
		"CDCSYNC_SOURCE_URL=" + p.e.PG.URL(p.src),
		"CDCSYNC_INVENTORY_URL=" + p.e.PG.URL(p.inv),
		"CDCSYNC_REDIS_URL=" + p.e.Redis.URL(),
		"CDCSYNC_KAFKA_BROKERS=" + strings.Join(p.e.Kafka.Brokers(), ","),
		"CDCSYNC_TOPIC_PREFIX=" + p.prefix,
		"CDCSYNC_GROUP_PREFIX=" + p.group,
		"CDCSYNC_SLOT=" + p.slot,
	}, extra...)
}

// waitCaughtUp waits until both sinks applied everything committed so far.
func (p *livePipeline) waitCaughtUp(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := status.New(ctx, p.statusCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for { // the slot appears once capture has started
		r, err := c.Collect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r.Slot.Exists {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := c.WaitCaughtUp(ctx, 100*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// TestReplayTopicRebuildsRedis runs the real pipeline over real writes,
// flushes Redis, and rebuilds it with `cdcsync replay topic` while the
// daemons keep running: first from a time (only orders written since come
// back), then from the beginning, after which verify finds no drift.
func TestReplayTopicRebuildsRedis(t *testing.T) {
	p := startLivePipeline(t)
	ctx := context.Background()
	p.waitCaughtUp(t) // the snapshot is applied; what follows streams
	p.exec(t, `UPDATE orders SET status = 'paid' WHERE id % 3 = 0`,
		`UPDATE orders SET status = 'shipped' WHERE id % 5 = 0`,
		`UPDATE orders SET quantity = quantity + 1, item_id = 21 WHERE id % 7 = 0`,
		`DELETE FROM orders WHERE id % 11 = 0`)
	p.waitCaughtUp(t)
	time.Sleep(20 * time.Millisecond) // Kafka timestamps have millisecond precision
	since := time.Now()
	time.Sleep(20 * time.Millisecond)
	p.exec(t, `INSERT INTO orders SELECT g, 1 + g % 20, 2, 'created' FROM generate_series(1001, 1050) g`,
		`UPDATE orders SET status = 'cancelled' WHERE id = 3`)
	p.waitCaughtUp(t)
	if r := runBinary(t, p.env(), "verify"); r.code != 0 {
		t.Fatalf("verify before the flush: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	flush := func() {
		t.Helper()
		if err := p.rdb.FlushDB(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	r := runBinary(t, p.env(), "replay", "topic", "--sink", "redis", "--from", since.Format(time.RFC3339Nano))
	if r.code != 0 || !strings.Contains(r.stdout, "replayed 51 messages of "+p.prefix+".public.orders to the redis sink") {
		t.Fatalf("replay --from %s: exit %d\nstdout:\n%s\nstderr:\n%s", since.Format(time.RFC3339Nano), r.code, r.stdout, r.stderr)
	}
	// Only rows changed since come back from the replay. Older rows (1, 300)
	// may come back too: the daemons notice the flush (Redis epoch) and
	// rebuild on their own, so their absence is not asserted.
	for key, want := range map[string]int64{"cdc:public.orders:1001": 1, "cdc:public.orders:1050": 1, "cdc:public.orders:3": 1} {
		if n := p.rdb.Exists(ctx, key).Val(); n != want {
			t.Errorf("after replay --from: %s exists %d, want %d", key, n, want)
		}
	}

	flush()
	r = runBinary(t, p.env(), "replay", "topic", "--sink", "redis", "--from", "beginning")
	if r.code != 0 || !strings.Contains(r.stdout, "replayed ") || !strings.Contains(r.stdout, "to the redis sink") {
		t.Fatalf("replay --from beginning: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("replay topic: %s", strings.TrimSpace(r.stdout))
	if strings.Contains(r.stdout, " 0 tombstones") {
		t.Errorf("the deletes' tombstones were not read:\n%s", r.stdout)
	}
	if r := runBinary(t, p.env("CDCSYNC_SINKS=redis"), "verify"); r.code != 0 {
		t.Fatalf("verify of the row cache after the replay: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The availability cache belongs to the inventory sink, which notices
	// that Redis lost its data (the epoch key is gone) and refreshes every
	// item by itself: verify ends clean without an inventory replay.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := runBinary(t, p.env(), "verify")
		if r.code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the inventory sink did not refill the flushed availability cache within 30s: verify exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		time.Sleep(500 * time.Millisecond)
	}
	r = runBinary(t, p.env(), "replay", "topic", "--sink", "inventory", "--from", "beginning", "--to", "end")
	if r.code != 0 || !strings.Contains(r.stdout, " 0 applied") {
		t.Fatalf("replay --sink inventory: exit %d, want 0 with nothing applied again\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if r := runBinary(t, p.env(), "verify"); r.code != 0 {
		t.Fatalf("verify after both replays: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// The daemons go on applying new changes.
	p.exec(t, `UPDATE orders SET status = 'shipped' WHERE id BETWEEN 1001 AND 1010`)
	p.waitCaughtUp(t)
	if r := runBinary(t, p.env(), "verify"); r.code != 0 {
		t.Fatalf("verify after more changes: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// Bad arguments and configuration exit 2 with one clear message, before
// anything connects.
func TestReplayTopicBadArguments(t *testing.T) {
	env := []string{"CDCSYNC_REDIS_URL=redis://127.0.0.1:1/0"}
	cases := []struct {
		env  []string
		args []string
		want string
	}{
		{env, []string{"--sink", "mongo", "--from", "beginning"}, `cdcsync replay: --sink must be inventory or redis, got "mongo"`},
		{env, []string{"--from", "beginning"}, "cdcsync replay: --sink is required: inventory or redis"},
		{env, []string{"--sink", "redis"}, "cdcsync replay: --from is required"},
		{env, []string{"--sink", "redis", "--from", "yesterday"}, `cdcsync replay: --from: "yesterday" is not beginning, end, an offset or an RFC 3339 time`},
		{env, []string{"--sink", "redis", "--from", "-3"}, "cdcsync replay: --from: offset -3 is negative"},
		{env, []string{"--sink", "redis", "--from", "10", "--to", "5"}, "cdcsync replay: --from 10 --to 5 is an empty range"},
		{env, []string{"--sink", "redis", "--from", "beginning", "--to", "2024-13-01T00:00:00Z"}, "cdcsync replay: --to: "},
		{env, []string{"--sink", "redis", "--from", "beginning", "now"}, `cdcsync replay: unexpected argument "now"`},
		{env, []string{"--sink", "redis", "--form", "beginning"}, "flag provided but not defined: -form"},
		{nil, []string{"--sink", "inventory", "--from", "beginning"}, "cdcsync: CDCSYNC_INVENTORY_URL: required when CDCSYNC_SINKS includes inventory, but not set"},
		{[]string{"CDCSYNC_REDIS_URL=http://cache:6379"}, []string{"--sink", "redis", "--from", "0"}, `cdcsync: CDCSYNC_REDIS_URL: must be a redis:// or rediss:// URL, got scheme "http"`},
	}
	for _, tc := range cases {
		r := runBinary(t, tc.env, append([]string{"replay", "topic"}, tc.args...)...)
		if r.code != 2 || !strings.HasPrefix(r.stderr, tc.want) && !strings.Contains(r.stderr, tc.want) {
			t.Errorf("replay topic %q: exit %d, stderr %q; want exit 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	// CDCSYNC_SINKS is the daemon's: --sink redis needs no inventory store
	// even when it names the inventory sink. (Nothing listens on the
	// broker port: this fails later, at the connection, with status 1.)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r := runBinary(t, []string{"CDCSYNC_SINKS=inventory", "CDCSYNC_REDIS_URL=redis://127.0.0.1:1/0",
		fmt.Sprintf("CDCSYNC_KAFKA_BROKERS=127.0.0.1:%d", port)}, "replay", "topic", "--sink", "redis", "--from", "beginning")
	if r.code != 1 || !strings.Contains(r.stderr, "connect to kafka brokers") {
		t.Errorf("unreachable broker: exit %d, stderr %q; want 1 naming the brokers", r.code, r.stderr)
	}
}

// `replay <subcommand> --help` prints the full usage of both subcommands
// and the variables they read.
func TestReplayHelp(t *testing.T) {
	for _, args := range [][]string{{"replay", "--help"}, {"replay", "snapshot", "--help"}, {"replay", "topic", "-h"}, {"help", "replay"}} {
		r := runBinary(t, nil, args...)
		if r.code != 0 {
			t.Errorf("%q: exit %d", args, r.code)
		}
		for _, want := range []string{"cdcsync replay snapshot --tables", "cdcsync replay topic --sink inventory|redis --from",
			"--chunk-size", "--to ", "without a consumer group", "  CDCSYNC_SOURCE_URL  string", "  CDCSYNC_INVENTORY_URL  string",
			"  CDCSYNC_SNAPSHOT_CHUNK_SIZE  integer  default: 10000"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%q lacks %q:\n%s", args, want, r.stdout)
			}
		}
	}
}

// replayConfig's capture variables are capture's own.
func TestReplayConfigMatchesCapture(t *testing.T) {
	capVars := map[string]config.Var{}
	for _, v := range config.Vars(&config.Capture{}) {
		capVars[v.Name] = v
	}
	sinkVars := map[string]bool{}
	for _, v := range config.Vars(&config.Sink{}) {
		sinkVars[v.Name] = true
	}
	for _, v := range config.Vars(&replayConfig{}) {
		if sinkVars[v.Name] {
			continue
		}
		c, ok := capVars[v.Name]
		if !ok {
			t.Errorf("%s is neither a sink nor a capture variable", v.Name)
			continue
		}
		if v.Default != c.Default || v.Secret != c.Secret || v.Type != c.Type {
			t.Errorf("%s: default %q secret %q type %s; capture has %q %q %s", v.Name, v.Default, v.Secret, v.Type, c.Default, c.Secret, c.Type)
		}
	}
}

func TestReplayTopicSummary(t *testing.T) {
	var out bytes.Buffer
	stats := sink.ReplayStats{Sink: "redis", Messages: 1500, Applied: 1000, Skipped: 400, Tombstones: 99, DeadLettered: 1,
		DeadLetterTopics: []string{"cdc.public.orders.dlq"},
		Partitions:       []sink.ReplayPartition{{Topic: "cdc.public.orders", Partition: 0, From: 0, To: 1500}}}
	writeReplaySummary(&out, stats, sink.Beginning(), sink.End(), 2*time.Second)
	want := "replayed 1,500 messages of cdc.public.orders to the redis sink in 2s: 1,000 applied, 400 already there or superseded, 99 tombstones, 1 dead-lettered to cdc.public.orders.dlq\n"
	if out.String() != want {
		t.Errorf("summary:\n got %q\nwant %q", out.String(), want)
	}
	out.Reset()
	stats.Partitions[0].From = 1500
	writeReplaySummary(&out, stats, sink.AtOffset(1500), sink.End(), time.Second)
	if !strings.HasPrefix(out.String(), "nothing to replay: cdc.public.orders holds no records from 1500 to end") {
		t.Errorf("empty summary %q", out.String())
	}
}

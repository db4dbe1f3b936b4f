// Package pipelinetest runs the whole pipeline in-process for integration
// tests: an order database and an inventory store (databases of a test
// cluster), a redis-server of the test's own, topics on the test broker,
// capture, and each sink in its own sink.Run so that a test can stop and
// start one sink alone (a change held back) while the rest runs.
package pipelinetest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/capture"
	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/status"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/sink"
)

// Pipeline is one test's pipeline.
type Pipeline struct {
	t testing.TB
	// Env holds the shared services; Redis is the test's own.
	Env   *testenv.Env
	Redis *testenv.Redis
	RDB   *redis.Client
	// Source and Inventory are the databases' names on Env.PG.
	Source, Inventory string
	// Verify is the configuration verify, trace and status use for this
	// pipeline.
	Verify  config.Verify
	Capture config.Capture
	Sink    config.Sink
	// CaptureMetrics is the registry of the capture StartCapture last
	// started.
	CaptureMetrics *prometheus.Registry

	mu      sync.Mutex
	running map[string]*daemon // "capture", "inventory", "redis"
}

type daemon struct {
	cancel context.CancelFunc
	done   chan error
}

// New creates the databases (the order database with DDL run in it), a
// redis-server and the topics of tables (schema.table), and configures
// capture and the sinks for them. Nothing runs until Start.
func New(t testing.TB, env *testenv.Env, tables []string, ddl ...string) *Pipeline {
	t.Helper()
	src, inv := env.PG.CreateDB(t), env.PG.CreateDB(t)
	rd, err := testenv.StartRedis()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rd.Close)
	if err := env.PG.Exec(context.Background(), src, ddl...); err != nil {
		t.Fatal(err)
	}
	var v config.Verify
	if err := config.Defaults(&v); err != nil {
		t.Fatal(err)
	}
	v.SourceURL, v.InventoryURL, v.RedisURL, v.Tables = env.PG.URL(src), env.PG.URL(inv), rd.URL(), tables
	p := NewFor(t, env, v)
	p.Source, p.Inventory, p.Redis = src, inv, rd
	return p
}

// NewFor configures capture and the sinks for the stores and tables of v
// (its URLs and Tables; the slot, topic prefix and group prefix are made
// up and set in p.Verify) and creates the topics. Nothing runs until
// Start.
func NewFor(t testing.TB, env *testenv.Env, v config.Verify) *Pipeline {
	t.Helper()
	p := &Pipeline{t: t, Env: env, running: map[string]*daemon{}}
	opts, err := redis.ParseURL(v.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	p.RDB = redis.NewClient(opts)
	t.Cleanup(func() { _ = p.RDB.Close() })

	prefix, group := testenv.RandomName("cdc"), testenv.RandomName("grp")
	for _, spec := range []any{&p.Capture, &p.Sink} {
		if err := config.Defaults(spec); err != nil {
			t.Fatal(err)
		}
	}
	brokers := env.Kafka.Brokers()
	c := &p.Capture
	c.SourceURL, c.Tables = v.SourceURL, v.Tables
	c.Slot, c.Publication = testenv.RandomName("slot"), testenv.RandomName("pub")
	c.TopicPrefix = prefix
	c.HeartbeatInterval, c.StatusInterval = 500*time.Millisecond, 200*time.Millisecond
	c.Kafka.Brokers = brokers
	c.HTTP.Addr = ""

	s := &p.Sink
	s.InventoryURL, s.RedisURL, s.Tables = v.InventoryURL, v.RedisURL, v.Tables
	s.TopicPrefix, s.GroupPrefix = prefix, group
	s.Kafka.Brokers = brokers
	s.HTTP.Addr = ""

	v.Slot, v.TopicPrefix, v.GroupPrefix = c.Slot, prefix, group
	v.Kafka.Brokers = brokers
	p.Verify = v
	for _, table := range v.Tables {
		schema, name, _ := strings.Cut(table, ".")
		if err := env.Kafka.CreateTopic(prefix+"."+schema+"."+name, 4); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(p.stopAll)
	return p
}

// Exec runs SQL in database db.
func (p *Pipeline) Exec(db string, sql ...string) {
	p.t.Helper()
	if err := p.Env.PG.Exec(context.Background(), db, sql...); err != nil {
		p.t.Fatal(err)
	}
}

// Start runs capture and both sinks.
func (p *Pipeline) Start() {
	p.t.Helper()
	p.StartCapture()
	p.StartSink(config.SinkInventory)
	p.StartSink(config.SinkRedis)
}

// StartCapture runs capture until StopCapture or the end of the test.
func (p *Pipeline) StartCapture() {
	cfg := p.Capture
	reg := prometheus.NewRegistry()
	p.CaptureMetrics = reg
	p.run("capture", func(ctx context.Context, log *slog.Logger) error {
		return capture.Run(ctx, cfg, log, reg)
	})
}

// StartSink runs one sink (config.SinkInventory or config.SinkRedis).
func (p *Pipeline) StartSink(name string) {
	cfg := p.Sink
	cfg.Sinks = []string{name}
	p.run(name, func(ctx context.Context, log *slog.Logger) error {
		return sink.Run(ctx, cfg, log, prometheus.NewRegistry())
	})
}

// StopSink stops one sink and waits for it (a clean stop: its applied
// batches are committed).
func (p *Pipeline) StopSink(name string) { p.stop(name) }

// StopCapture stops capture and waits for it.
func (p *Pipeline) StopCapture() { p.stop("capture") }

func (p *Pipeline) run(name string, fn func(context.Context, *slog.Logger) error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.running[name]; ok {
		p.t.Fatalf("%s already runs", name)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{cancel: cancel, done: make(chan error, 1)}
	logger := slog.New(slog.NewTextHandler(testLog{p.t}, &slog.HandlerOptions{Level: slog.LevelWarn})).With("c", name)
	go func() { d.done <- fn(ctx, logger) }()
	p.running[name] = d
}

func (p *Pipeline) stop(name string) {
	p.mu.Lock()
	d, ok := p.running[name]
	delete(p.running, name)
	p.mu.Unlock()
	if !ok {
		return
	}
	d.cancel()
	select {
	case err := <-d.done:
		if err != nil {
			p.t.Errorf("%s: %v", name, err)
		}
	case <-time.After(30 * time.Second):
		p.t.Errorf("%s did not stop within 30s", name)
	}
}

func (p *Pipeline) stopAll() {
	p.mu.Lock()
	names := make([]string, 0, len(p.running))
	for n := range p.running {
		names = append(names, n)
	}
	p.mu.Unlock()
	for _, n := range names {
		p.stop(n)
	}
}

// WaitCaughtUp waits until capture streams from its slot and every change
// so far is applied by the sinks in sinks (default: both).
func (p *Pipeline) WaitCaughtUp(sinks ...string) {
	p.t.Helper()
	WaitCaughtUp(p.t, p.Verify, sinks...)
}

// WaitCaughtUp waits until capture streams from the slot of v and every
// change so far is applied by the sinks in sinks (default: v's).
func WaitCaughtUp(t testing.TB, v config.Verify, sinks ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cfg := v.StatusConfig()
	if len(sinks) > 0 {
		cfg.Sinks = sinks
	}
	c, err := status.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for {
		r, err := c.Collect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r.Slot.Streaming() {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal(fmt.Errorf("capture did not start streaming: %w", ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := c.WaitCaughtUp(ctx, 100*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
}

type testLog struct{ t testing.TB }

func (w testLog) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

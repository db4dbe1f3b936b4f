// Package demo is `cdcsync demo`, the one-command local run (DESIGN.md):
// it starts a throwaway Postgres cluster, Redis and an embedded
// development broker, creates the demo schema with stocked items, runs
// capture and both sinks in-process, generates orders (with OrderCreated
// outbox events), and shows throughput, lag and drift live until it is
// stopped. Then it lets the pipeline catch up, verifies the stores, stops
// everything and removes what it created.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/capture"
	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/logging"
	"github.com/cdcsync/cdcsync/internal/status"
	"github.com/cdcsync/cdcsync/internal/verify"
	"github.com/cdcsync/cdcsync/sink"
)

// Options configure Run.
type Options struct {
	Config config.Demo
	// Out gets the live view and the summary, Err the tail of the log when
	// something fails.
	Out, Err io.Writer
	// Terminal is set when Out is a terminal: the view then redraws in
	// place every second; otherwise it prints a line every few seconds.
	Terminal bool
	// Gone, when closed, says nobody watches the demo any more (its
	// terminal hung up). A failed write to Out says the same (the pager
	// it was piped into exited). Either way the demo stops at once,
	// without catching up or verifying, and removes what it created.
	Gone <-chan struct{}
}

// Result is what a demo run did.
type Result struct {
	Writes  int64 // order transactions
	Creates int64 // orders created (OrderCreated events published)
	Events  int64 // OrderCreated records on Kafka at the end
	// Final is the verification after the pipeline caught up; nil when
	// the demo was abandoned (Options.Gone).
	Final *verify.Report
	// Probe is what the read-your-writes probe counted.
	Probe probeStats
}

// Timings of the run.
const (
	refresh      = time.Second      // live view
	lineEvery    = 5 * time.Second  // non-terminal output
	driftEvery   = 5 * time.Second  // live verification, at least
	startTimeout = 60 * time.Second // capture's slot to appear
	drainTimeout = 60 * time.Second // catching up after the generator stops
)

// Run runs the demo until ctx ends or cfg.Duration has passed. It returns
// a *MissingError, before starting anything, when server binaries are
// missing, and a nil Result when ctx ended before orders were generated.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if err := CheckPrerequisites(); err != nil {
		return nil, err
	}
	ctx, abandon := context.WithCancel(ctx)
	defer abandon()
	d := &run{opts: opts, cfg: opts.Config}
	gone := func() {
		d.gone.Store(true)
		abandon()
	}
	d.opts.Out = &watchedWriter{w: opts.Out, gone: gone}
	if opts.Gone != nil {
		stopWatching := make(chan struct{})
		defer close(stopWatching)
		go func() {
			select {
			case <-opts.Gone:
				gone()
			case <-stopWatching:
			}
		}()
	}
	defer d.cleanup()
	res, err := d.run(ctx)
	if d.gone.Load() {
		// Nobody reads the outcome, and an error now is most likely the
		// abandoning itself; the deferred cleanup still stops and
		// removes the services.
		return res, nil
	}
	if err != nil && res == nil && ctx.Err() != nil {
		// Stopped (Ctrl-C) while starting: not a failure, nothing to
		// verify yet.
		d.say("stopped while starting; cleaning up")
		return nil, nil
	}
	if err != nil && d.logPath != "" {
		d.showLogTail()
	}
	return res, err
}

// run is one demo run's state.
type run struct {
	opts    Options
	cfg     config.Demo
	dir     string // the demo's own temp dir (the log)
	logPath string
	logFile *os.File
	logger  *slog.Logger // for capture and the sinks: counts warnings
	// fileLogger writes to the same log without counting.
	fileLogger *slog.Logger
	warn       *warnings
	svc        *demoServices
	cleaned    bool
	// gone is set once nobody watches the demo any more (Options.Gone).
	gone atomic.Bool
}

func (d *run) say(format string, args ...any) {
	fmt.Fprintf(d.opts.Out, format+"\n", args...)
}

func (d *run) run(ctx context.Context) (*Result, error) {
	if err := d.openLog(); err != nil {
		return nil, err
	}
	d.say("cdcsync demo: starting a throwaway Postgres cluster, Redis and a development broker...")
	svc, err := startServices()
	if err != nil {
		return nil, err
	}
	d.svc = svc
	brokers := svc.kafka.Brokers()
	// Logged past the warning counter: the view counts the pipeline's
	// warnings, and this one is the demo's own.
	d.fileLogger.Warn("DEVELOPMENT BROKER (kfake, in-process): for the demo only, not a production Kafka", "addr", brokers)
	d.say("  Postgres   %s (wal_level=logical; databases %s and %s)", serverURL(svc.pg.URL("")), sourceDB, inventoryDB)
	d.say("  Redis      %s", svc.redis.URL())
	d.say("  Kafka      %s: DEVELOPMENT BROKER (kfake, in-process), for the demo only; production runs against real Kafka",
		strings.Join(brokers, ","))
	d.say("  log        %s (capture and sinks)", d.logPath)

	if err := createSchema(ctx, svc, d.cfg.Items); err != nil {
		return nil, err
	}
	if err := createTopics(svc); err != nil {
		return nil, err
	}
	d.say("  schema     public.orders; %d items stocked in inventory_items (and %d for the read-your-writes probe); topics %s, %s",
		d.cfg.Items, probeItems, ordersTopic, eventsTopic)

	cfgs, err := newConfigs(svc, d.cfg.Log)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	// Capture and the sinks outlive ctx: after Ctrl-C they still apply
	// what the generator wrote, so that the final check sees no drift.
	pipeCtx, stopPipeline := context.WithCancel(context.WithoutCancel(ctx))
	comps := newComponents(stopPipeline)
	comps.start("capture", func() error {
		return capture.Run(pipeCtx, cfgs.capture, d.logger.With("component", "capture"), reg)
	})
	comps.start("sinks", func() error {
		return sink.Run(pipeCtx, cfgs.sink, d.logger.With("component", "sink"), reg)
	})
	res, err := d.runPipeline(ctx, cfgs, reg, comps)
	if stopErr := comps.stop(); err == nil && stopErr != nil {
		err = stopErr
	}
	if err != nil {
		return res, err
	}
	d.say("stopped capture and the sinks")
	return res, nil
}

// runPipeline waits for capture, runs the generator and the live view,
// then drains and verifies.
func (d *run) runPipeline(ctx context.Context, cfgs configs, reg *prometheus.Registry, comps *components) (*Result, error) {
	col, err := status.New(ctx, cfgs.verify.StatusConfig())
	if err != nil {
		return nil, err
	}
	defer col.Close()
	if err := d.waitForSlot(ctx, col, comps); err != nil {
		return nil, err
	}

	pool, err := pgxpool.New(ctx, cfgs.capture.SourceURL)
	if err != nil {
		return nil, fmt.Errorf("connect to the order database: %w", err)
	}
	defer pool.Close()
	gen, err := newGenerator(pool, d.cfg.Items, d.cfg.Rate)
	if err != nil {
		return nil, err
	}
	ver, err := verify.New(ctx, cfgs.verify)
	if err != nil {
		return nil, err
	}
	defer ver.Close()
	events, err := newEventCounter(cfgs.verify.Kafka, eventsTopic)
	if err != nil {
		return nil, err
	}
	defer events.close()

	genCtx, stopGen := context.WithCancel(ctx)
	if d.cfg.Duration > 0 {
		genCtx, stopGen = context.WithTimeout(ctx, d.cfg.Duration)
	}
	defer stopGen()
	if d.cfg.Duration > 0 {
		d.say("generating about %d order writes per second for %s...", d.cfg.Rate, d.cfg.Duration)
	} else {
		d.say("generating about %d order writes per second; Ctrl-C stops...", d.cfg.Rate)
	}
	d.say("")

	prb, closeProbe, err := d.newProbe(ctx, cfgs, pool)
	if err != nil {
		return nil, err
	}
	defer closeProbe()

	genDone := make(chan error, 1)
	go func() { genDone <- gen.run(genCtx) }()
	live := &liveDrift{}
	var wg sync.WaitGroup
	wg.Go(func() { live.run(genCtx, ver) })
	var probeErr error
	wg.Go(func() {
		if probeErr = prb.run(genCtx); probeErr != nil {
			stopGen()
		}
	})

	smp := &sampler{gen: gen, reg: reg, col: col, events: events}
	loopErr := d.liveView(genCtx, smp, live, prb, comps, genDone)
	stopGen()
	wg.Wait()
	genErr := <-genDone
	if err := errors.Join(loopErr, genErr, probeErr); err != nil {
		return nil, err
	}

	res := &Result{Writes: gen.writes.Load(), Creates: gen.creates.Load(), Probe: prb.get()}
	if d.gone.Load() {
		return res, nil
	}
	d.say("")
	d.say("stopping: the generator wrote %s order transactions (%s orders created); waiting for capture and the sinks to catch up...",
		count(res.Writes), count(res.Creates))
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainTimeout)
	defer cancel()
	start := time.Now()
	if err := col.WaitCaughtUp(drainCtx, 100*time.Millisecond, nil); err != nil {
		return res, err
	}
	d.say("caught up in %s", time.Since(start).Round(10*time.Millisecond))
	if n, err := events.count(); err == nil {
		res.Events = n
	}
	d.say("OrderCreated events on %s: %s", eventsTopic, count(res.Events))
	writeLatency(d.opts.Out, reg)

	res.Final, err = ver.Run(drainCtx)
	if err != nil {
		return res, fmt.Errorf("final verify: %w", err)
	}
	d.say("final verify (order database against inventory_items, the availability cache and the row cache):")
	if err := verify.WriteText(d.opts.Out, res.Final); err != nil {
		return res, err
	}
	d.say("read-your-writes probe: %s", res.Probe.describe())
	return res, nil
}

// newProbe connects the read-your-writes probe to the inventory store and
// Redis; close releases the connections.
func (d *run) newProbe(ctx context.Context, cfgs configs, src *pgxpool.Pool) (*probe, func(), error) {
	inv, err := pgxpool.New(ctx, cfgs.sink.InventoryURL)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to the inventory store: %w", err)
	}
	opts, err := redis.ParseURL(cfgs.sink.RedisURL)
	if err != nil {
		inv.Close()
		return nil, nil, fmt.Errorf("redis URL: %w", err)
	}
	rdb := redis.NewClient(opts)
	return newProbe(src, inv, rdb, d.cfg.Items), func() { _ = rdb.Close(); inv.Close() }, nil
}

// waitForSlot waits until capture streams from its slot and the slot has
// its consistent point (status.Slot.Streaming): orders committed before it
// would be snapshotted, but their outbox events would be lost (they live
// only in the WAL before the consistent point). While the slot is created
// it already shows as existing and active, which is not enough.
func (d *run) waitForSlot(ctx context.Context, col *status.Collector, comps *components) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for {
		r, err := col.Collect(ctx)
		if err == nil && r.Slot.Streaming() {
			return nil
		}
		if err := comps.failed(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("capture did not start streaming from its slot")
			}
			return fmt.Errorf("waiting for capture: %w (%w)", err, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// liveView samples and draws every refresh until ctx ends; it returns
// early with an error when a component or the generator fails.
func (d *run) liveView(ctx context.Context, smp *sampler, live *liveDrift, prb *probe, comps *components, genDone chan error) error {
	v := &view{w: d.opts.Out, terminal: d.opts.Terminal, lineEvery: lineEvery}
	start := time.Now()
	prev, err := smp.take(ctx)
	if err != nil {
		return err
	}
	t := time.NewTicker(refresh)
	defer t.Stop()
	draw := func(cur sample, r rates) {
		n, last := d.warn.get()
		v.draw(frame{elapsed: time.Since(start), cur: cur, rate: r, drift: live.get(), probe: prb.get(), warnings: n, lastWarning: last})
	}
	draw(prev, rates{})
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-genDone:
			genDone <- err // for the caller
			if err != nil {
				return fmt.Errorf("order generator: %w", err)
			}
			return nil
		case <-comps.done:
			return comps.failed()
		case <-t.C:
		}
		cur, err := smp.take(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read pipeline status: %w", err)
		}
		draw(cur, rateBetween(prev, cur))
		prev = cur
	}
}

// configs are the in-process components' configurations: the defaults
// (not the environment, which may hold a real deployment's settings),
// pointed at the demo's services.
type configs struct {
	capture config.Capture
	sink    config.Sink
	verify  config.Verify
}

func newConfigs(svc *demoServices, log config.Log) (configs, error) {
	var c configs
	for _, spec := range []any{&c.capture, &c.sink, &c.verify} {
		if err := config.Defaults(spec); err != nil {
			return c, err
		}
	}
	brokers := svc.kafka.Brokers()
	c.capture.SourceURL = svc.pg.URL(sourceDB)
	c.capture.TopicPrefix = topicPrefix
	c.capture.Kafka.Brokers = brokers
	c.capture.HTTP.Addr = ""
	c.capture.Log = log

	c.sink.InventoryURL = svc.pg.URL(inventoryDB)
	c.sink.RedisURL = svc.redis.URL()
	c.sink.TopicPrefix = topicPrefix
	c.sink.Kafka.Brokers = brokers
	c.sink.HTTP.Addr = ""
	c.sink.Log = log

	c.verify.SourceURL = c.capture.SourceURL
	c.verify.InventoryURL = c.sink.InventoryURL
	c.verify.RedisURL = c.sink.RedisURL
	c.verify.TopicPrefix = topicPrefix
	c.verify.Kafka.Brokers = brokers
	c.verify.MaxReport = 10
	return c, errors.Join(c.capture.Validate(), c.sink.Validate(), c.verify.Validate())
}

// serverURL shows the cluster's URL without a database (it has no
// password to hide).
func serverURL(url string) string { return strings.TrimSuffix(url, "/?sslmode=disable") }

func (d *run) openLog() error {
	dir, err := os.MkdirTemp("", "cdcsync-demo-")
	if err != nil {
		return fmt.Errorf("create the demo's directory: %w", err)
	}
	d.dir = dir
	d.logPath = filepath.Join(dir, "demo.log")
	if d.logFile, err = os.Create(d.logPath); err != nil {
		return fmt.Errorf("create the demo log: %w", err)
	}
	base, err := logging.New(d.cfg.Log, d.logFile)
	if err != nil {
		return err
	}
	d.warn = &warnings{}
	d.fileLogger = base
	d.logger = slog.New(countingHandler{Handler: base.Handler(), w: d.warn})
	return nil
}

// showLogTail prints the end of the log to Err: the log goes away with
// the demo's directory.
func (d *run) showLogTail() {
	b, err := os.ReadFile(d.logPath)
	if err != nil || len(b) == 0 {
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	lines = lines[max(len(lines)-20, 0):]
	fmt.Fprintf(d.opts.Err, "--- last lines of the demo log ---\n%s\n", strings.Join(lines, "\n"))
}

// cleanup stops the services and removes every directory the demo made.
func (d *run) cleanup() {
	if d.cleaned {
		return
	}
	d.cleaned = true
	if d.svc != nil {
		d.svc.close()
		if left := d.svc.leftovers(); len(left) > 0 {
			fmt.Fprintf(d.opts.Err, "cdcsync demo: could not remove %s\n", strings.Join(left, ", "))
		} else {
			d.say("removed the demo's Postgres cluster, Redis data and broker data")
		}
	}
	if d.logFile != nil {
		_ = d.logFile.Close()
	}
	if d.dir != "" {
		_ = os.RemoveAll(d.dir)
	}
}

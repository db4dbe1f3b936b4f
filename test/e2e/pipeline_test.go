package e2e

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/capture"
	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
	"github.com/cdcsync/cdcsync/sink"
)

// running is capture and both sinks running until the test ends: both
// in-process, or capture as a `cdcsync capture` process that the test can
// SIGKILL (pipelineSetup.captureProcess).
type running struct {
	statusCfg  config.Status
	verifyCfg  config.Verify
	captureCfg config.Capture
	sinkCfg    config.Sink
	// positions are the sink process's applied-through positions.
	positions *sink.AppliedPositions

	t       *testing.T
	logger  *slog.Logger
	mu      sync.Mutex
	stopCap func()
	capProc *testenv.Process
	stopSnk func()
}

// pipelineSetup changes how startPipelineWith runs the pipeline.
type pipelineSetup struct {
	adjust         []func(*config.Capture, *config.Sink)
	captureProcess bool
}

// startPipeline runs capture and both sinks in-process; adjust changes
// their configuration before they start.
func startPipeline(t *testing.T, e *testenv.Env, src, inv string, adjust ...func(*config.Capture, *config.Sink)) *running {
	t.Helper()
	return startPipelineWith(t, e, src, inv, pipelineSetup{adjust: adjust})
}

func startPipelineWith(t *testing.T, e *testenv.Env, src, inv string, setup pipelineSetup) *running {
	t.Helper()
	prefix, group, slot := testenv.RandomName("cdc"), testenv.RandomName("grp"), testenv.RandomName("slot")
	var cc config.Capture
	var sc config.Sink
	var stc config.Status
	var vc config.Verify
	for _, c := range []any{&cc, &sc, &stc, &vc} {
		if err := config.Defaults(c); err != nil {
			t.Fatal(err)
		}
	}
	cc.SourceURL = e.PG.URL(src)
	cc.Slot, cc.Publication, cc.TopicPrefix = slot, slot, prefix
	cc.HeartbeatInterval, cc.StatusInterval = 500*time.Millisecond, 200*time.Millisecond
	cc.Kafka.Brokers, cc.HTTP.Addr = e.Kafka.Brokers(), ""
	sc.InventoryURL, sc.RedisURL = e.PG.URL(inv), e.Redis.URL()
	sc.TopicPrefix, sc.GroupPrefix = prefix, group
	sc.Kafka.Brokers, sc.HTTP.Addr = e.Kafka.Brokers(), ""
	stc.SourceURL, stc.Slot, stc.TopicPrefix, stc.GroupPrefix = cc.SourceURL, slot, prefix, group
	stc.Kafka.Brokers = e.Kafka.Brokers()
	vc.SourceURL, vc.InventoryURL = cc.SourceURL, sc.InventoryURL
	vc.Slot, vc.TopicPrefix, vc.GroupPrefix = slot, prefix, group
	vc.Kafka.Brokers = e.Kafka.Brokers()
	for _, f := range setup.adjust {
		f(&cc, &sc)
	}
	vc.RedisURL = sc.RedisURL
	if err := e.Kafka.CreateTopic(pipeline.Topic(prefix, "public", "orders"), 4); err != nil {
		t.Fatal(err)
	}
	p := &running{
		statusCfg: stc, verifyCfg: vc, captureCfg: cc, sinkCfg: sc, positions: sink.NewAppliedPositions(), t: t,
		logger: slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if setup.captureProcess {
		p.startCaptureProcess()
	} else {
		p.startCapture()
	}
	p.startSink()
	t.Cleanup(p.stop)
	return p
}

// stop stops capture (SIGTERM for a process: it must exit 0), then the
// sinks. A test that restarted the capture process calls it before it
// ends, while the process is still its to stop.
func (p *running) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopCap != nil {
		p.stopCap()
		p.stopCap = nil
	}
	if p.stopSnk != nil {
		p.stopSnk()
		p.stopSnk = nil
	}
}

// startCapture runs capture in-process until the test ends.
func (p *running) startCapture() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- capture.Run(ctx, p.captureCfg, p.logger.With("c", "capture"), nil) }()
	p.stopCap = func() {
		cancel()
		if err := <-done; err != nil {
			p.t.Errorf("capture: %v", err)
		}
	}
}

// startCaptureProcess runs `cdcsync capture` with the capture
// configuration.
func (p *running) startCaptureProcess() {
	cc := p.captureCfg
	env := []string{
		"CDCSYNC_SOURCE_URL=" + cc.SourceURL, "CDCSYNC_SLOT=" + cc.Slot, "CDCSYNC_PUBLICATION=" + cc.Publication,
		"CDCSYNC_TOPIC_PREFIX=" + cc.TopicPrefix, "CDCSYNC_KAFKA_BROKERS=" + strings.Join(cc.Kafka.Brokers, ","),
		"CDCSYNC_HEARTBEAT_INTERVAL=" + cc.HeartbeatInterval.String(), "CDCSYNC_STATUS_INTERVAL=" + cc.StatusInterval.String(),
		"CDCSYNC_WATERMARK_INTERVAL=" + cc.WatermarkInterval.String(), "CDCSYNC_HTTP_ADDR=", "CDCSYNC_LOG_LEVEL=warn",
	}
	proc := testenv.StartProcess(p.t, "capture", testenv.BuildCdcsync(p.t), env, "capture")
	p.capProc = proc
	p.stopCap = func() {
		_ = proc.Signal(syscall.SIGTERM)
		if code, err := proc.Wait(20 * time.Second); err != nil || code != 0 {
			p.t.Errorf("capture process: exit %d, %v\n%s", code, err, proc.Tail(20))
		}
	}
}

// killCapture SIGKILLs the capture process and starts a new one.
func (p *running) killCapture() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.capProc.Kill(); err != nil {
		p.t.Errorf("kill capture: %v", err)
	}
	_, _ = p.capProc.Wait(10 * time.Second)
	p.startCaptureProcess()
}

// startSink runs both sinks in-process.
func (p *running) startSink() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- sink.Run(ctx, p.sinkCfg, p.logger.With("c", "sink"), nil, sink.WithAppliedPositions(p.positions))
	}()
	p.stopSnk = func() {
		cancel()
		if err := <-done; err != nil {
			p.t.Errorf("sink: %v", err)
		}
	}
}

// restartSink stops the sinks (as on SIGTERM) and starts them again.
func (p *running) restartSink() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopSnk()
	p.startSink()
}

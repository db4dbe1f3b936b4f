package sink

import (
	"bufio"
	"errors"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
)

// cdcsyncBinary builds ./cmd/cdcsync into the test's temporary directory:
// the kill test needs the sink as a separate process to SIGKILL it.
func cdcsyncBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cdcsync")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/cdcsync/cdcsync/cmd/cdcsync").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/cdcsync: %v: %s", err, out)
	}
	return bin
}

// sinkProcess is `cdcsync sink` running as a child process.
type sinkProcess struct {
	cmd     *exec.Cmd
	logPath string
	metrics string // /metrics URL
	exited  chan error
}

// startProcess runs `cdcsync sink` configured like h.config through
// CDCSYNC_ variables, as an operator would.
func (h *harness) startProcess(bin string, cfg config.Sink) *sinkProcess {
	h.t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		h.t.Fatal(err)
	}
	logPath := filepath.Join(h.t.TempDir(), "sink.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		h.t.Fatal(err)
	}
	cmd := exec.Command(bin, "sink")
	cmd.Env = append(os.Environ(),
		"CDCSYNC_SINKS="+strings.Join(cfg.Sinks, ","),
		"CDCSYNC_INVENTORY_URL="+cfg.InventoryURL,
		"CDCSYNC_REDIS_URL="+cfg.RedisURL,
		"CDCSYNC_TOPIC_PREFIX="+cfg.TopicPrefix,
		"CDCSYNC_GROUP_PREFIX="+cfg.GroupPrefix,
		"CDCSYNC_GROUP_INSTANCE_ID=sink-0",
		"CDCSYNC_KAFKA_BROKERS="+strings.Join(cfg.Kafka.Brokers, ","),
		"CDCSYNC_SINK_BATCH_SIZE="+strconv.Itoa(cfg.BatchSize),
		"CDCSYNC_RETRY_MAX_BACKOFF=1s",
		"CDCSYNC_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(port),
		"CDCSYNC_LOG_LEVEL=debug",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		h.t.Fatal(err)
	}
	p := &sinkProcess{cmd: cmd, logPath: logPath, metrics: "http://127.0.0.1:" + strconv.Itoa(port) + "/metrics", exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait(); logf.Close() }()
	h.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if h.t.Failed() {
			b, _ := os.ReadFile(logPath)
			h.t.Logf("sink process log (tail):\n%s", tail(string(b), 6000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// kill sends SIGKILL and waits for the process to die.
func (p *sinkProcess) kill(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	p.exited <- errors.New("killed")
}

// terminate sends SIGTERM and wants exit status 0.
func (p *sinkProcess) terminate(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		p.exited <- err
		if err != nil {
			t.Errorf("cdcsync sink after SIGTERM: %v, want exit status 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("cdcsync sink did not exit within 30s of SIGTERM")
	}
}

// scrape sums the samples of a metric whose label set contains every
// name="value" in labels, from the process's /metrics.
func (p *sinkProcess) scrape(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(p.metrics)
	if err != nil {
		t.Fatalf("scrape %s: %v", p.metrics, err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// failCommits makes the broker refuse the offset commits of the harness's
// consumer groups (COORDINATOR_LOAD_IN_PROGRESS: the client keeps the
// offsets to commit later) until the returned stop is called. It counts
// the refused commits: each one comes right after a batch was applied.
func (h *harness) failCommits() (refused *atomic.Int64, stop func()) {
	cluster := h.kafka.Cluster()
	refused = &atomic.Int64{}
	var active atomic.Bool
	active.Store(true)
	cluster.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if !active.Load() {
			cluster.DropControl()
			return nil, nil, false
		}
		cluster.KeepControl()
		oc := req.(*kmsg.OffsetCommitRequest)
		if !strings.HasPrefix(oc.Group, h.prefix) {
			return nil, nil, false
		}
		resp := oc.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range oc.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = 14 // COORDINATOR_LOAD_IN_PROGRESS
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		refused.Add(1)
		return resp, nil, true
	})
	return refused, func() { active.Store(false) }
}

// TestSinkProcessKilled runs `cdcsync sink` as a child process and SIGKILLs
// it at three random moments while events stream in, plus once when it has
// applied batches whose offset commits the broker refused (killed between
// apply and commit), restarting it each time. The stores must end exactly
// right, the last process must have skipped the redelivered events, and
// SIGTERM must stop it with status 0.
func TestSinkProcessKilled(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 1000, onHand: 1000})
	bin := cdcsyncBinary(t)
	w := newWorkload(seed(t), 1000)
	w.truncates = true
	cfg := h.config(config.SinkInventory, config.SinkRedis)
	cfg.BatchSize = 250
	p := h.startProcess(bin, cfg)

	// Three random kills in the first two thirds of the stream; the kill
	// between apply and commit comes last, so that the last process is the
	// one that meets the redelivered batches.
	kills := map[int]bool{}
	for len(kills) < 3 {
		kills[20+rand.IntN(160)] = true
	}
	const betweenApplyAndCommit = 220
	h.streamWorkload(w, 8*time.Second, func(chunk int) {
		switch {
		case kills[chunk]:
			t.Logf("chunk %d: SIGKILL", chunk)
			p.kill(t)
			p = h.startProcess(bin, cfg)
		case chunk == betweenApplyAndCommit:
			refused, stop := h.failCommits()
			deadline := time.Now().Add(20 * time.Second)
			for refused.Load() < 4 {
				if time.Now().After(deadline) {
					t.Fatal("the sink made no commit attempt within 20s")
				}
				var recs []record
				for range 20 {
					recs = append(recs, w.txn()...)
				}
				h.produce(recs)
				time.Sleep(25 * time.Millisecond)
			}
			t.Logf("chunk %d: SIGKILL after %d applied batches whose commits were refused", chunk, refused.Load())
			p.kill(t)
			stop()
			p = h.startProcess(bin, cfg)
		}
	})
	h.waitApplied(120*time.Second, h.groups(config.SinkInventory, config.SinkRedis)...)
	h.checkInventory(w)
	h.checkRedis(w, true, true)

	for _, sink := range []string{config.SinkInventory, config.SinkRedis} {
		stale := p.scrape(t, "cdcsync_sink_events_skipped_total", `sink="`+sink+`"`, `reason="stale"`)
		t.Logf("%s: last process skipped %v stale events", sink, stale)
		if stale == 0 {
			t.Errorf("%s: the restarted sink skipped nothing: the uncommitted batches were not redelivered", sink)
		}
	}
	p.terminate(t)
}

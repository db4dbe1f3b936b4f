package httpserver

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

func TestEndpoints(t *testing.T) {
	reg := NewRegistry()
	events := prometheus.NewCounter(prometheus.CounterOpts{Name: "cdcsync_test_events_total", Help: "test"})
	reg.MustRegister(events)
	events.Add(3)
	ready := NewReadiness()

	srv, err := Listen("127.0.0.1:0", Handler(reg, ready), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	base := "http://" + srv.Addr()

	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 503 || body != "not ready: starting\n" {
		t.Errorf("/readyz before ready = %d %q", code, body)
	}
	ready.SetReady()
	if code, body := get(t, base+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz when ready = %d %q", code, body)
	}
	ready.SetNotReady("kafka brokers unreachable")
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "kafka brokers unreachable") {
		t.Errorf("/readyz after SetNotReady = %d %q", code, body)
	}
	// Liveness does not follow readiness.
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz while not ready = %d", code)
	}
	code, body := get(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{"cdcsync_test_events_total 3", "go_goroutines ", "process_cpu_seconds_total "} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, _ := get(t, base+"/nope"); code != 404 {
		t.Errorf("/nope = %d", code)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if c, err := net.DialTimeout("tcp", srv.Addr(), time.Second); err == nil {
		c.Close()
		t.Error("still accepting connections after shutdown")
	}
}

func TestListenBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := Listen(ln.Addr().String(), http.NotFoundHandler(), slog.New(slog.DiscardHandler)); err == nil {
		t.Error("Listen on a busy port succeeded")
	}
}

func TestReadinessZeroValue(t *testing.T) {
	var r Readiness
	if ok, reason := r.Ready(); ok || reason != "not ready" {
		t.Errorf("zero Readiness = %v %q", ok, reason)
	}
	r.SetNotReady("")
	if ok, reason := r.Ready(); ok || reason != "not ready" {
		t.Errorf("SetNotReady(\"\") = %v %q", ok, reason)
	}
}

// cdcsync_ready follows the readiness, for the "not ready for minutes"
// alert.
func TestReadinessGauge(t *testing.T) {
	r := NewReadiness()
	reg := prometheus.NewRegistry()
	reg.MustRegister(r.Collector())
	value := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil || len(mfs) != 1 || mfs[0].GetName() != "cdcsync_ready" {
			t.Fatalf("gather: %v %v", mfs, err)
		}
		return mfs[0].GetMetric()[0].GetGauge().GetValue()
	}
	if v := value(); v != 0 {
		t.Errorf("starting: cdcsync_ready %v, want 0", v)
	}
	r.SetReady()
	if v := value(); v != 1 {
		t.Errorf("ready: cdcsync_ready %v, want 1", v)
	}
	r.SetNotReady("store down")
	if v := value(); v != 0 {
		t.Errorf("not ready: cdcsync_ready %v, want 0", v)
	}
}

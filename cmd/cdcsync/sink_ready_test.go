package main

import (
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The sink daemon serves its readiness on /readyz: 200 once its sinks
// joined their groups and their stores answer, 503 naming Redis while
// Redis is down, 200 again when it is back.
func TestSinkReadyz(t *testing.T) {
	e := startServices(t)
	const topic = "cdc.public.orders"
	if err := e.Kafka.CreateTopic(topic, 2); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd, out := startBinary(t, []string{
		"CDCSYNC_SINKS=redis", "CDCSYNC_HTTP_ADDR=" + addr, "CDCSYNC_REDIS_URL=" + e.Redis.URL(),
		"CDCSYNC_KAFKA_BROKERS=" + strings.Join(e.Kafka.Brokers(), ","),
	}, "sink")
	waitListening(t, addr, out)

	readyz := func() (int, string) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	waitReadyz := func(code int, contains string) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, body := readyz()
			if got == code && strings.Contains(body, contains) {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz answers %d %q, want %d with %q\nsink output:\n%s", got, body, code, contains, out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	waitReadyz(http.StatusOK, "")
	// /applied is served too: no capture writes watermarks here, so the
	// redis sink has no applied-through position and a wait times out.
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("/applied"); code != http.StatusOK || !strings.Contains(body, `"sink":"redis"`) {
		t.Errorf("GET /applied: %d %s", code, body)
	}
	if code, body := get("/applied?lsn=0/1&timeout=100ms"); code != http.StatusGatewayTimeout {
		t.Errorf("GET /applied?lsn=0/1&timeout=100ms: %d %s, want 504", code, body)
	}
	if err := e.Redis.Stop(); err != nil {
		t.Fatal(err)
	}
	body := waitReadyz(http.StatusServiceUnavailable, "redis sink: store unreachable: Redis")
	t.Logf("Redis down: /readyz %s", strings.TrimSpace(body))
	if err := e.Redis.Start(); err != nil {
		t.Fatal(err)
	}
	waitReadyz(http.StatusOK, "")

	_ = cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, cmd, out); code != 0 {
		t.Errorf("sink exit %d after SIGTERM:\n%s", code, out.String())
	}
}

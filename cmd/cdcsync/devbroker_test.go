package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// startBinary starts cdcsync with a clean environment plus env and returns
// the command and its combined output buffer.
func startBinary(t *testing.T, env []string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(testenv.BuildCdcsync(t), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, out
}

// waitExit waits for cmd and returns its exit code.
func waitExit(t *testing.T, cmd *exec.Cmd, out *syncBuffer) int {
	t.Helper()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("%v did not exit:\n%s", cmd.Args, out.String())
	}
	return cmd.ProcessState.ExitCode()
}

func waitListening(t *testing.T, addr string, out *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s:\n%s", addr, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}

// The development broker creates the requested topics, stores records in
// its data dir, exits 0 on SIGTERM and serves the records again after a
// restart.
func TestDevBroker(t *testing.T) {
	addr := freeAddr(t)
	env := []string{
		"CDCSYNC_DEV_BROKER_ADDR=" + addr,
		"CDCSYNC_DEV_BROKER_DATA_DIR=" + t.TempDir(),
		"CDCSYNC_DEV_BROKER_TOPICS=cdc.public.orders:3,cdc.public.items",
		"CDCSYNC_DEV_BROKER_PARTITIONS=2",
	}
	cmd, out := startBinary(t, env, "dev-broker")
	waitListening(t, addr, out)

	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	client, err := sarama.NewClient([]string{addr}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Topics are created right after the listener opens; give it a moment.
	var parts []int32
	for deadline := time.Now().Add(10 * time.Second); ; {
		_ = client.RefreshMetadata()
		parts, err = client.Partitions("cdc.public.items")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || len(parts) != 2 {
		t.Fatalf("cdc.public.items partitions = %v, %v; want 2 (the default)", parts, err)
	}
	if parts, err := client.Partitions("cdc.public.orders"); err != nil || len(parts) != 3 {
		t.Fatalf("cdc.public.orders partitions = %v, %v; want 3", parts, err)
	}
	producer, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	partition, offset, err := producer.SendMessage(&sarama.ProducerMessage{
		Topic: "cdc.public.orders", Key: sarama.StringEncoder(`{"id":1}`), Value: sarama.StringEncoder(`{"op":"c"}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	producer.Close()
	client.Close()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd, out); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0:\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), "DEVELOPMENT BROKER") {
		t.Errorf("log does not label the development broker:\n%s", out.String())
	}

	cmd, out = startBinary(t, env, "dev-broker")
	waitListening(t, addr, out)
	consumer, err := sarama.NewConsumer([]string{addr}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition("cdc.public.orders", partition, offset)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	select {
	case m := <-pc.Messages():
		if string(m.Key) != `{"id":1}` || string(m.Value) != `{"op":"c"}` {
			t.Errorf("after restart read %s=%s", m.Key, m.Value)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("record not served after restart:\n%s", out.String())
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	if code := waitExit(t, cmd, out); code != 0 {
		t.Fatalf("exit %d after SIGINT, want 0:\n%s", code, out.String())
	}
}

// A daemon that fails at run time exits 1 with the error logged; here the
// metrics port is taken.
func TestDaemonRuntimeErrorExits1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := runBinary(t, []string{
		"CDCSYNC_SINKS=redis",
		"CDCSYNC_HTTP_ADDR=" + ln.Addr().String(),
		"CDCSYNC_LOG_FORMAT=json",
	}, "sink")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, `"level":"ERROR"`) || !strings.Contains(r.stderr, "address already in use") {
		t.Errorf("error not logged:\n%s", r.stderr)
	}
}

// syncBuffer is a bytes.Buffer safe for the writer goroutines of exec.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// healthcheck probes a running daemon's endpoints: /healthz answers 200,
// /readyz 503 until the daemon reports ready.
func TestHealthcheckCommand(t *testing.T) {
	addr := freeAddr(t)
	brokerAddr := freeAddr(t)
	// A sink against a broker that is not there keeps running (it retries),
	// which is all this test needs: a live process serving its endpoints.
	cmd, out := startBinary(t, []string{
		"CDCSYNC_SINKS=redis", "CDCSYNC_HTTP_ADDR=" + addr, "CDCSYNC_KAFKA_BROKERS=" + brokerAddr,
	}, "sink")
	waitListening(t, addr, out)

	env := []string{"CDCSYNC_HTTP_ADDR=" + addr}
	if r := runBinary(t, env, "healthcheck"); r.code != 0 || r.stdout != "ok\n" {
		t.Errorf("healthcheck: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := runBinary(t, env, "healthcheck", "/readyz"); r.code != 1 || !strings.Contains(r.stderr, "503") {
		t.Errorf("healthcheck /readyz: exit %d, stderr %q", r.code, r.stderr)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, cmd, out); code != 0 {
		t.Errorf("sink exit %d after SIGTERM:\n%s", code, out.String())
	}
	if r := runBinary(t, env, "healthcheck"); r.code != 1 || !strings.Contains(r.stderr, "connection refused") {
		t.Errorf("healthcheck of a stopped daemon: exit %d, stderr %q", r.code, r.stderr)
	}
}

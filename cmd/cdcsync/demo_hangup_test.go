package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// demoUntilGenerating starts `cdcsync demo` with TMPDIR=tmp and its stdout
// on a pipe, and reads the pipe until the demo generates orders. It
// returns the process, the rest of the pipe and the output read so far.
func demoUntilGenerating(t *testing.T, tmp string) (*exec.Cmd, *bufio.Reader, io.Closer, string, chan struct{}) {
	t.Helper()
	cmd := exec.Command(testenv.BuildCdcsync(t), "demo", "--rate", "100")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + tmp}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
	})
	r := bufio.NewReader(stdout)
	var seen strings.Builder
	lines := make(chan string)
	go func() {
		defer close(lines)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			lines <- l
			if strings.HasPrefix(l, "generating") {
				return
			}
		}
	}()
	deadline := time.After(90 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("demo output ended before it generated orders:\n%s", seen.String())
			}
			seen.WriteString(l)
			if strings.HasPrefix(l, "generating") {
				return cmd, r, stdout, seen.String(), done
			}
		case <-deadline:
			t.Fatalf("demo did not start generating within 90s:\n%s", seen.String())
		}
	}
}

// demoServerPorts reads the Postgres and Redis ports from the demo's
// start-up lines.
func demoServerPorts(t *testing.T, out string) (pg, redis int) {
	t.Helper()
	pm := regexp.MustCompile(`Postgres\s+postgres://postgres@127\.0\.0\.1:(\d+)`).FindStringSubmatch(out)
	rm := regexp.MustCompile(`Redis\s+redis://127\.0\.0\.1:(\d+)`).FindStringSubmatch(out)
	if pm == nil || rm == nil {
		t.Fatalf("no Postgres or Redis address in the demo's output:\n%s", out)
	}
	pg, _ = strconv.Atoi(pm[1])
	redis, _ = strconv.Atoi(rm[1])
	return pg, redis
}

// demoServersGone waits for the demo to exit (done) after what happened,
// and fails the test unless its Postgres cluster and redis-server are
// gone: no process runs out of tmp or as the demo's redis-server, nothing
// listens on their ports, and tmp is empty.
func demoServersGone(t *testing.T, done chan struct{}, after, tmp string, pgPort, redisPort int) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("demo still running 60s after %s", after)
	}
	redisTitle := "127.0.0.1:" + strconv.Itoa(redisPort)
	var procs []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmdline, tmp) || (strings.Contains(cmdline, "redis-server") && strings.Contains(cmdline, redisTitle)) {
			procs = append(procs, e.Name()+": "+cmdline)
		}
	}
	if len(procs) > 0 {
		t.Errorf("processes left running:\n%s", strings.Join(procs, "\n"))
	}
	for _, port := range []int{pgPort, redisPort} {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
			c.Close()
			t.Errorf("something still listens on the demo's port %d", port)
		}
	}
	if left := leftBehind(t, tmp); len(left) > 0 {
		t.Errorf("left behind in TMPDIR: %v", left)
	}
}

// stopDemo starts the demo with its output on a pipe, lets it generate
// orders, calls stop, and checks that its servers and temp dirs are gone
// once it exited (after says what happened, for messages). It returns the
// exit status.
func stopDemo(t *testing.T, after string, stop func(cmd *exec.Cmd, stdout io.Closer, tmp string)) int {
	t.Helper()
	if testing.Short() {
		t.Skip("starts the demo's services")
	}
	tmp := demoTempDir(t)
	cmd, r, stdout, out, done := demoUntilGenerating(t, tmp)
	pgPort, redisPort := demoServerPorts(t, out)
	stop(cmd, stdout, tmp)
	go func() { _, _ = io.Copy(io.Discard, r) }()
	demoServersGone(t, done, after, tmp, pgPort, redisPort)
	return cmd.ProcessState.ExitCode()
}

// Closing the terminal sends SIGHUP: the demo stops, and its Postgres
// cluster and redis-server go with it, temp dirs included.
func TestDemoHangupStopsServices(t *testing.T) {
	stopDemo(t, "SIGHUP", func(cmd *exec.Cmd, _ io.Closer, _ string) {
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	})
}

// `cdcsync demo | head` or a pager the user quits: the demo's next write
// fails (EPIPE), and it stops and removes its services instead of dying
// by SIGPIPE with them left running.
func TestDemoClosedPipeStopsServices(t *testing.T) {
	stopDemo(t, "its output pipe closed", func(_ *exec.Cmd, stdout io.Closer, _ string) {
		if err := stdout.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// SIGTERM (a service manager stopping it) ends the demo like Ctrl-C: the
// pipeline catches up, and the services and temp dirs go.
func TestDemoTerminateStopsServices(t *testing.T) {
	code := stopDemo(t, "SIGTERM", func(cmd *exec.Cmd, _ io.Closer, _ string) {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	})
	if code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", code)
	}
}

// An error ends the demo too (here its order database dies under the
// order generator): it exits 1, and Redis and every temp dir still go.
func TestDemoErrorStopsServices(t *testing.T) {
	code := stopDemo(t, "its Postgres was killed", func(_ *exec.Cmd, _ io.Closer, tmp string) {
		pid, err := os.ReadFile(filepath.Join(postgresDataDir(t, tmp), "postmaster.pid"))
		if err != nil {
			t.Fatal(err)
		}
		postmaster, err := strconv.Atoi(strings.SplitN(string(pid), "\n", 2)[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(postmaster, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	})
	if code != 1 {
		t.Errorf("exit %d after its database died, want 1", code)
	}
}

// postgresDataDir finds the demo's cluster's data directory under tmp.
func postgresDataDir(t *testing.T, tmp string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(tmp, "cdcsync-pg-*", "data"))
	if len(m) != 1 {
		t.Fatalf("demo's Postgres data dir under %s: %v", tmp, m)
	}
	return m[0]
}

// The demo starts its servers with internal/services, not the test
// harness: the binary must not link the testing package.
func TestBinaryDoesNotLinkTesting(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "testing" || strings.HasSuffix(pkg, "/internal/testenv") {
			t.Errorf("cdcsync links %s", pkg)
		}
	}
}

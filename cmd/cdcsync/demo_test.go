package main

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// runDemo runs `cdcsync demo args...` with env, as a user would, and
// returns its exit status and output. stop, if set, is called with the
// running process.
func runDemo(t *testing.T, env []string, stop func(*os.Process), args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(testenv.BuildCdcsync(t), append([]string{"demo"}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	if stop != nil {
		stop(cmd.Process)
	}
	select {
	case <-done:
	case <-time.After(150 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("demo did not stop; stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// The README's first command: it starts everything itself, shows orders
// flowing through capture and both sinks, and ends with no drift and
// nothing left behind.
func TestDemoRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo")
	}
	tmp := demoTempDir(t)
	code, out, errOut := runDemo(t, []string{"TMPDIR=" + tmp}, nil, "--duration", "20s")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	t.Logf("output:\n%s", out)
	for _, want := range []string{"DEVELOPMENT BROKER (kfake, in-process)", "1000 items stocked",
		"caught up in", "\nno drift\n", "removed the demo's Postgres cluster"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// The progress lines (not a terminal: one every few seconds) show
	// orders written, captured and applied by both sinks.
	line := regexp.MustCompile(`orders (\d+)/s \(\d+\), OrderCreated events (\d+), captured (\d+)/s, slot lag [^,]+, inventory (\d+)/s lag \d+, redis (\d+)/s`)
	moving := false
	for _, m := range line.FindAllStringSubmatch(out, -1) {
		if atoi(m[1]) > 0 && atoi(m[2]) > 0 && atoi(m[3]) > 0 && atoi(m[4]) > 0 && atoi(m[5]) > 0 {
			moving = true
		}
	}
	if !moving {
		t.Errorf("no progress line with orders, events, capture and both sinks moving")
	}
	events := regexp.MustCompile(`OrderCreated events on cdc\.events\.order: ([\d,]+)`).FindStringSubmatch(out)
	created := regexp.MustCompile(`\(([\d,]+) orders created\)`).FindStringSubmatch(out)
	// Every order created commits its OrderCreated event in the same
	// transaction: the topic must hold exactly one per order. (The
	// generator once started while the slot was still being created, and
	// the events of orders committed before its consistent point were
	// lost: status.TestSlotIsNotStreamingWhileCreated.)
	if events == nil || created == nil || events[1] == "0" || events[1] != created[1] {
		t.Errorf("OrderCreated events on Kafka %v, orders created %v: want equal and nonzero", events, created)
	}
	// The final verify runs at a consistent cut, and the read-your-writes
	// probe read every order it created after waiting for its token.
	if !strings.Contains(out, "compared at the consistent cut") {
		t.Errorf("final verify not at a consistent cut")
	}
	probe := regexp.MustCompile(`read-your-writes probe: ([\d,]+) orders created then read; stale without waiting: Redis ([\d,]+) \(\d+%\), inventory ([\d,]+) \(\d+%\); after waiting for the token: Redis (\d+), inventory (\d+) stale, (\d+) timeouts`).FindStringSubmatch(out)
	if probe == nil || atoi(probe[1]) == 0 || probe[4] != "0" || probe[5] != "0" || probe[6] != "0" {
		t.Errorf("read-your-writes probe: %v; want probes, and no stale read or timeout after waiting", probe)
	} else {
		t.Logf("read-your-writes: %s probes, stale without waiting: Redis %s, inventory %s", probe[1], probe[2], probe[3])
	}
	if !regexp.MustCompile(`read-your-writes \d+ probes: stale without waiting \d+/\d+, after waiting 0/0`).MatchString(out) {
		t.Errorf("the live lines do not show the read-your-writes probe")
	}
	if left := leftBehind(t, tmp); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// Ctrl-C stops the generator, lets the pipeline catch up, verifies and
// removes everything.
func TestDemoStopsOnInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo")
	}
	tmp := demoTempDir(t)
	code, out, errOut := runDemo(t, []string{"TMPDIR=" + tmp, "CDCSYNC_DEMO_RATE=50"}, func(p *os.Process) {
		time.Sleep(12 * time.Second)
		_ = p.Signal(syscall.SIGINT)
	})
	if code != 0 || !strings.Contains(out, "\nno drift\n") || !strings.Contains(out, "removed the demo's") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if left := leftBehind(t, tmp); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// Ctrl-C while the services start: no error, nothing left behind.
func TestDemoInterruptedWhileStarting(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the demo's services")
	}
	tmp := demoTempDir(t)
	code, out, errOut := runDemo(t, []string{"TMPDIR=" + tmp}, func(p *os.Process) {
		time.Sleep(time.Second)
		_ = p.Signal(syscall.SIGINT)
	})
	if code != 0 || strings.Contains(out, "final verify") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if left := leftBehind(t, tmp); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// Without the server binaries the demo names the packages to install.
func TestDemoNamesMissingPackages(t *testing.T) {
	bin := testenv.BuildCdcsync(t)
	run := func(env ...string) (int, string) {
		cmd := exec.Command(bin, "demo")
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		_ = cmd.Run()
		return cmd.ProcessState.ExitCode(), stderr.String()
	}
	empty := t.TempDir()
	code, msg := run("PATH="+empty, "PG_BINDIR="+empty)
	want := "cdcsync demo: the demo needs the Postgres 15+ server binaries (initdb, postgres; or set PG_BINDIR) and redis-server, " +
		"which are not installed: install the Debian/Ubuntu packages postgresql redis-server (sudo apt-get install postgresql redis-server)\n"
	if code != 2 || msg != want {
		t.Errorf("nothing installed: exit %d\n got %q\nwant %q", code, msg, want)
	}
	if _, err := testenv.PostgresBinDir(); err == nil {
		code, msg = run("PATH=" + empty)
		if code != 2 || !strings.Contains(msg, "needs redis-server, which is not installed: install the Debian/Ubuntu package redis-server") {
			t.Errorf("no redis-server: exit %d, %q", code, msg)
		}
	}
}

func TestDemoUsage(t *testing.T) {
	r := runBinary(t, nil, "demo", "--duration", "-1s")
	if r.code != 2 || !strings.Contains(r.stderr, "--duration must not be negative") {
		t.Errorf("negative duration: exit %d, %q", r.code, r.stderr)
	}
	r = runBinary(t, []string{"CDCSYNC_DEMO_RATE=0"}, "demo")
	if r.code != 2 || r.stderr != "cdcsync: CDCSYNC_DEMO_RATE: must be a positive number, got 0\n" {
		t.Errorf("bad rate: exit %d, %q", r.code, r.stderr)
	}
	r = runBinary(t, nil, "demo", "--help")
	for _, want := range []string{"Usage: cdcsync demo [options]", "-duration", "-rate", "CDCSYNC_DEMO_DURATION"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("--help lacks %q:\n%s", want, r.stdout)
		}
	}
}

// demoTempDir returns an empty directory for the demo's TMPDIR, so that
// what it leaves behind can be seen. Postgres runs as the postgres user
// when the tests run as root: the directory must be reachable for it.
func demoTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "demo-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// leftBehind lists what is left in dir.
func leftBehind(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func atoi(s string) int {
	n, _ := strconv.Atoi(strings.ReplaceAll(s, ",", ""))
	return n
}

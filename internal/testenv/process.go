package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/internal/services"
)

// builds caches binaries built for this test process, by package path.
var builds = struct {
	sync.Mutex
	paths map[string]string
}{paths: map[string]string{}}

// BuildCdcsync builds ./cmd/cdcsync once per test process and returns the
// binary's path. Tests that kill daemons run them as separate processes.
func BuildCdcsync(tb testing.TB) string {
	tb.Helper()
	return Build(tb, "github.com/cdcsync/cdcsync/cmd/cdcsync")
}

// Build builds the main package pkg once per test process.
func Build(tb testing.TB, pkg string) string {
	tb.Helper()
	builds.Lock()
	defer builds.Unlock()
	if p, ok := builds.paths[pkg]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "cdcsync-bin-")
	if err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if msg, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", pkg, err, msg)
	}
	builds.paths[pkg] = out
	return out
}

// RemoveBuilds deletes the binaries Build made in this test process
// (testenv.Main calls it when the tests end).
func RemoveBuilds() {
	builds.Lock()
	defer builds.Unlock()
	for pkg, path := range builds.paths {
		_ = os.RemoveAll(filepath.Dir(path))
		delete(builds.paths, pkg)
	}
}

// Process is a daemon started by a test, with its output kept in a file.
type Process struct {
	Name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	mu      sync.Mutex
	state   *os.ProcessState
}

// StartProcess runs bin with args and extra environment variables.
func StartProcess(tb testing.TB, name, bin string, env []string, args ...string) *Process {
	tb.Helper()
	logf, err := os.CreateTemp("", "cdcsync-"+name+"-*.log")
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	services.InGroup(cmd)
	if err := cmd.Start(); err != nil {
		logf.Close()
		tb.Fatalf("start %s: %v", name, err)
	}
	p := &Process{Name: name, cmd: cmd, logPath: logf.Name(), exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.state = cmd.ProcessState
		p.mu.Unlock()
		close(p.exited)
	}()
	tb.Cleanup(func() {
		_ = p.Kill()
		if tb.Failed() {
			tb.Logf("--- %s output (last 4KB) ---\n%s", name, p.Tail(4096))
		}
		_ = os.Remove(p.logPath)
	})
	return p
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Kill sends SIGKILL and waits for the process to go.
func (p *Process) Kill() error {
	_ = services.KillGroup(p.cmd, syscall.SIGKILL)
	<-p.exited
	return nil
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits up to timeout for the process to exit and returns its exit
// code (-1 when killed by a signal).
func (p *Process) Wait(timeout time.Duration) (int, error) {
	select {
	case <-p.exited:
	case <-time.After(timeout):
		return 0, fmt.Errorf("%s still running after %v", p.Name, timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.ExitCode(), nil
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// PeakRSS returns the running process's peak resident set size in bytes
// (VmHWM). It must be read while the process runs: the rusage of a reaped
// child is no good on Linux, because ru_maxrss survives execve and so
// includes the (test) parent's memory at the moment of the fork.
func (p *Process) PeakRSS() (int64, error) {
	return PeakRSS(p.Pid())
}

// PeakRSS reads VmHWM of process pid from /proc.
func PeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read peak RSS: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmHWM %q: %w", line, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("VmHWM not found in /proc status")
}

// Output returns everything the process wrote so far.
func (p *Process) Output() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// Tail returns the last n bytes of the output.
func (p *Process) Tail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}

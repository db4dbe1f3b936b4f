// Package testenv starts the real services integration tests run against: a
// throwaway Postgres cluster with wal_level=logical, redis-server and a
// Kafka-protocol broker (kfake), each on a free port and torn down at the
// end. Nothing here is a mock: tests can kill and restart every service.
package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
)

// FreePort asks the kernel for a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// killGroup sends sig to the process group led by cmd's process, so that
// children (Postgres backends) go with their parent.
func killGroup(cmd *exec.Cmd, sig syscall.Signal) error {
	if cmd == nil || cmd.Process == nil {
		return nil
	}
	return syscall.Kill(-cmd.Process.Pid, sig)
}

// inGroup makes cmd lead its own process group.
func inGroup(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
}

// mkdirShared creates a temp dir that the postgres user can own and reach.
func mkdirShared(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", fmt.Errorf("create temp dir: %w", err)
	}
	return dir, nil
}

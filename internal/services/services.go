// Package services starts throwaway local servers: a Postgres cluster in a
// temp dir with wal_level=logical (run as the postgres user when started
// by root, since Postgres refuses to run as root), redis-server and an
// in-process Kafka-protocol development broker (kfake), each on a free
// port, each removed again by Close. `cdcsync demo` runs on them, and the
// test harness (internal/testenv) builds on them, not the other way round:
// nothing here links the testing package into the binary.
package services

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

// KillGroup sends sig to the process group led by cmd's process, so that
// children (Postgres backends) go with their parent.
func KillGroup(cmd *exec.Cmd, sig syscall.Signal) error {
	if cmd == nil || cmd.Process == nil {
		return nil
	}
	return syscall.Kill(-cmd.Process.Pid, sig)
}

// InGroup makes cmd lead its own process group.
func InGroup(cmd *exec.Cmd) {
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

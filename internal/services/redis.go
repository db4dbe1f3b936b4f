package services

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a redis-server on a free port with an append-only file that is
// fsynced on every write, so a kill -9 loses nothing the sink was told was
// written (as a durable production set-up would behave).
type Redis struct {
	Port int
	Dir  string
	// Password, when set before Start, starts the server with
	// requirepass (tests of a Redis restarted with a password).
	Password string
	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
}

// StartRedis starts redis-server.
func StartRedis() (*Redis, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errors.New("redis-server not found: install the redis-server package")
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cdcsync-redis-")
	if err != nil {
		return nil, fmt.Errorf("create redis dir: %w", err)
	}
	r := &Redis{Port: port, Dir: dir}
	if err := r.Start(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Start runs the server (again) and waits for PING.
func (r *Redis) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return errors.New("redis already running")
	}
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--dir", r.Dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always",
		"--logfile", filepath.Join(r.Dir, "redis.log"))
	if r.Password != "" {
		cmd.Args = append(cmd.Args, "--requirepass", r.Password)
	}
	InGroup(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	r.cmd, r.exited = cmd, exited
	client := redis.NewClient(&redis.Options{Addr: r.Addr(), Password: r.Password})
	defer client.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := client.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			r.cmd = nil
			return errors.New("redis-server exited at start-up; see " + filepath.Join(r.Dir, "redis.log"))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server not ready within 15s: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Addr is host:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// URL is a redis:// URL for database 0.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Kill sends SIGKILL.
func (r *Redis) Kill() error { return r.stop(syscall.SIGKILL) }

// Stop sends SIGTERM and waits.
func (r *Redis) Stop() error { return r.stop(syscall.SIGTERM) }

func (r *Redis) stop(sig syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return nil
	}
	_ = KillGroup(r.cmd, sig)
	select {
	case <-r.exited:
	case <-time.After(15 * time.Second):
		_ = KillGroup(r.cmd, syscall.SIGKILL)
		<-r.exited
	}
	r.cmd = nil
	return nil
}

// Restart kills (crash) or stops the server and starts it again.
func (r *Redis) Restart(crash bool) error {
	var err error
	if crash {
		err = r.Kill()
	} else {
		err = r.Stop()
	}
	if err != nil {
		return err
	}
	return r.Start()
}

// Close stops the server and removes its files.
func (r *Redis) Close() {
	_ = r.Kill()
	_ = os.RemoveAll(r.Dir)
}

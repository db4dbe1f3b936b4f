package services

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a throwaway cluster in a temp dir. When the tests run as root
// it runs as the postgres user, since Postgres refuses to run as root.
type Postgres struct {
	Port    int
	Dir     string // holds data/ and the socket
	bin     string
	cred    *syscall.Credential
	extra   []string
	wantTLS bool
	// TLS holds the CA and certificate files when WithTLS was given.
	TLS     TLSFiles
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
}

// PostgresOption adjusts the cluster's server settings.
type PostgresOption func(*Postgres)

// WithSetting adds `-c name=value` to the server command line.
func WithSetting(name, value string) PostgresOption {
	return func(p *Postgres) { p.extra = append(p.extra, "-c", name+"="+value) }
}

// WithTLS turns on TLS with a generated CA and server certificate; the
// CA file is in p.TLS.CA for clients (sslmode=verify-full).
func WithTLS() PostgresOption {
	return func(p *Postgres) { p.wantTLS = true }
}

// PostgresBinDir finds the server binaries: $PG_BINDIR, `pg_config --bindir`,
// or the newest /usr/lib/postgresql/*/bin.
func PostgresBinDir() (string, error) {
	if d := os.Getenv("PG_BINDIR"); d != "" {
		return d, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) > 0 {
		return filepath.Dir(matches[len(matches)-1]), nil
	}
	return "", errors.New("postgres server binaries (initdb) not found: install the postgresql package or set PG_BINDIR")
}

// StartPostgres initialises and starts a cluster with wal_level=logical.
func StartPostgres(opts ...PostgresOption) (*Postgres, error) {
	bin, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := mkdirShared("cdcsync-pg-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{Port: port, Dir: dir, bin: bin, logPath: filepath.Join(dir, "postgres.log")}
	for _, o := range opts {
		o(p)
	}
	if os.Getuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, fmt.Errorf("chown %s: %w", dir, err)
		}
	}
	if p.wantTLS {
		if p.TLS, err = GenerateTLS(dir); err != nil {
			return nil, err
		}
		// Postgres insists that its key belongs to it and nobody else.
		if p.cred != nil {
			for _, f := range []string{p.TLS.Cert, p.TLS.Key} {
				if err := os.Chown(f, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
					return nil, fmt.Errorf("chown %s: %w", f, err)
				}
			}
		}
		p.extra = append(p.extra, "-c", "ssl=on", "-c", "ssl_cert_file="+p.TLS.Cert, "-c", "ssl_key_file="+p.TLS.Key)
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", p.dataDir(), "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	if err := p.Start(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (p *Postgres) dataDir() string { return filepath.Join(p.Dir, "data") }

// Start runs the server (again) and waits until it accepts connections.
func (p *Postgres) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return errors.New("postgres already running")
	}
	args := []string{"-D", p.dataDir(), "-p", strconv.Itoa(p.Port), "-k", p.Dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "wal_level=logical",
		"-c", "max_replication_slots=64",
		"-c", "max_wal_senders=64",
		"-c", "max_connections=200",
		"-c", "fsync=off",
		"-c", "full_page_writes=off",
		"-c", "shared_buffers=128MB",
		"-c", "wal_sender_timeout=60s",
	}
	args = append(args, p.extra...)
	cmd := exec.Command(filepath.Join(p.bin, "postgres"), args...)
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o666)
	if err != nil {
		return fmt.Errorf("open postgres log: %w", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	p.cmd, p.exited = cmd, exited
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, p.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-exited:
			p.cmd = nil
			return fmt.Errorf("postgres exited at start-up: %s", p.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections within 30s: %v: %s", err, p.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *Postgres) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

// Stop shuts the server down (fast mode) and waits for it.
func (p *Postgres) Stop() error { return p.stop(syscall.SIGINT) }

// Kill sends SIGKILL to the server and all its backends, as a crash would.
func (p *Postgres) Kill() error { return p.stop(syscall.SIGKILL) }

func (p *Postgres) stop(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil
	}
	var children []int
	if sig == syscall.SIGKILL {
		// Every backend is its own session leader (Postgres calls
		// setsid), so the group kill misses them: find them first and
		// kill the whole server, as a machine crash would.
		children = childPIDs(p.cmd.Process.Pid)
		_ = KillGroup(p.cmd, sig)
		for _, pid := range children {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	} else {
		_ = p.cmd.Process.Signal(sig)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		_ = KillGroup(p.cmd, syscall.SIGKILL)
		<-p.exited
	}
	// Wait until every process of the old server is gone, so a restart
	// does not find its shared memory still in use.
	for _, pid := range children {
		for i := 0; i < 250 && processAlive(pid); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	p.cmd = nil
	return nil
}

// Restart stops (or kills, when crash is set) and starts the server again.
func (p *Postgres) Restart(crash bool) error {
	var err error
	if crash {
		err = p.Kill()
	} else {
		err = p.Stop()
	}
	if err != nil {
		return err
	}
	return p.Start()
}

// Close stops the server and removes its directory.
func (p *Postgres) Close() {
	_ = p.Stop()
	_ = os.RemoveAll(p.Dir)
}

// URL returns a connection URL for database db as the superuser.
func (p *Postgres) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, db)
}

// Exec runs SQL statements in database db.
func (p *Postgres) Exec(ctx context.Context, db string, sql ...string) error {
	conn, err := pgx.Connect(ctx, p.URL(db))
	if err != nil {
		return fmt.Errorf("connect %s: %w", db, err)
	}
	defer conn.Close(ctx)
	for _, s := range sql {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("exec %q: %w", s, err)
		}
	}
	return nil
}

// childPIDs lists the direct children of pid from /proc.
func childPIDs(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: state ppid ...
		rest := string(stat)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	rest := string(stat)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	fields := strings.Fields(rest)
	return len(fields) > 0 && fields[0] != "Z"
}

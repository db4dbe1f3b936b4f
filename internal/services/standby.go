package services

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"github.com/jackc/pgx/v5"
)

// StartStandby makes a physical streaming standby of p: a pg_basebackup of
// the running cluster into a new temp dir, written with -R so that it
// streams from p, and started on a port of its own with p's settings. It
// is what a failover promotes: it has p's system identifier and data, and
// (before Postgres 17's failover slots) none of p's logical slots.
func (p *Postgres) StartStandby() (*Postgres, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := mkdirShared("cdcsync-pg-standby-")
	if err != nil {
		return nil, err
	}
	s := &Postgres{Port: port, Dir: dir, bin: p.bin, cred: p.cred, extra: slices.Clone(p.extra),
		TLS: p.TLS, logPath: filepath.Join(dir, "postgres.log")}
	if s.cred != nil {
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("chown %s: %w", dir, err)
		}
	}
	backup := exec.Command(filepath.Join(p.bin, "pg_basebackup"), "-D", s.dataDir(),
		"-h", "127.0.0.1", "-p", strconv.Itoa(p.Port), "-U", "postgres",
		"-R", "-X", "stream", "-c", "fast", "--no-sync")
	backup.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := backup.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pg_basebackup: %w: %s", err, out)
	}
	if err := s.Start(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Promote ends recovery on a standby (pg_promote) and returns once it
// accepts writes.
func (p *Postgres) Promote(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return fmt.Errorf("promote standby on port %d: %w", p.Port, err)
	}
	defer conn.Close(context.Background())
	var promoted bool
	if err := conn.QueryRow(ctx, "SELECT pg_promote(true, 60)").Scan(&promoted); err != nil {
		return fmt.Errorf("promote standby on port %d: %w", p.Port, err)
	}
	if !promoted {
		return fmt.Errorf("promote standby on port %d: not promoted within 60s: %s", p.Port, p.logTail())
	}
	return nil
}

// TakeOver fails over from primary to p, a standby of it, as an operator
// with a virtual IP or a DNS switch would: the primary is killed, p is
// promoted and restarted on the primary's port, so the primary's URLs now
// reach the new primary.
func (p *Postgres) TakeOver(ctx context.Context, primary *Postgres) error {
	if err := primary.Kill(); err != nil {
		return fmt.Errorf("fail over: kill the primary: %w", err)
	}
	if err := p.Promote(ctx); err != nil {
		return err
	}
	if err := p.Stop(); err != nil {
		return fmt.Errorf("fail over: stop the promoted standby: %w", err)
	}
	p.Port = primary.Port
	if err := p.Start(); err != nil {
		return fmt.Errorf("fail over: start the new primary on port %d: %w", p.Port, err)
	}
	return nil
}

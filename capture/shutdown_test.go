package capture

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
)

// TestSIGTERMDuringSetUpAndSnapshotExitsZero: a SIGTERM is a clean stop
// whatever capture was doing, also while it still connects to Kafka or
// snapshots existing rows (issue 10 item 15).
func TestSIGTERMDuringSetUpAndSnapshotExitsZero(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	bin := buildBinary(t)

	t.Run("set-up", func(t *testing.T) {
		db := e.PG.CreateDB(t)
		conn := connect(t, e, db)
		mustExec(t, conn, ordersDDL)
		cfg := testConfig(e, db)
		port, err := testenv.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Kafka.Brokers = []string{fmt.Sprintf("127.0.0.1:%d", port)} // nobody listens: capture keeps connecting
		proc := testenv.StartProcess(t, "capture", bin, captureEnv(cfg), "capture")
		// The publication is made before Kafka is contacted.
		waitFor(t, 30*time.Second, "capture to create its publication", func() bool {
			var n int
			_ = conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_publication WHERE pubname = $1", cfg.Publication).Scan(&n)
			return n == 1
		})
		time.Sleep(500 * time.Millisecond) // into the Kafka connection attempts
		if err := proc.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		code, err := proc.Wait(15 * time.Second)
		if err != nil || code != 0 {
			t.Fatalf("SIGTERM while connecting to Kafka: exit %d, %v; output:\n%s", code, err, proc.Tail(2000))
		}
	})

	t.Run("snapshot", func(t *testing.T) {
		db := e.PG.CreateDB(t)
		conn := connect(t, e, db)
		mustExec(t, conn, ordersDDL, "INSERT INTO orders SELECT g, 1, 1, 'created', NULL FROM generate_series(1, 20000) g")
		cfg := testConfig(e, db)
		// A slow broker keeps the snapshot running long enough to be
		// interrupted.
		restore := slowBroker(t, e.Kafka.Cluster(), 50*time.Millisecond)
		proc := testenv.StartProcess(t, "capture", bin, captureEnv(cfg), "capture")
		waitFor(t, 30*time.Second, "the snapshot to start", func() bool {
			return strings.Contains(proc.Output(), "backfill started")
		})
		if err := proc.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		code, err := proc.Wait(15 * time.Second)
		restore()
		if err != nil || code != 0 {
			t.Fatalf("SIGTERM during the snapshot: exit %d, %v; output:\n%s", code, err, proc.Tail(2000))
		}
		if strings.Contains(proc.Output(), "initial snapshot done") {
			t.Fatal("the snapshot finished before SIGTERM: the test did not interrupt it")
		}
	})
}

// logRecords keeps the records of a slog logger for assertions.
type logRecords struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.records = append(l.records, r.Clone())
	l.mu.Unlock()
	return nil
}
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }

// count returns how many records at level or above contain substr in
// their message.
func (l *logRecords) count(level slog.Level, substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.records {
		if r.Level >= level && strings.Contains(r.Message, substr) {
			n++
		}
	}
	return n
}

// TestHeartbeatFailuresAreWarnedAndCounted: a heartbeat that cannot reach
// the database means an idle slot stops advancing: that is worth a warning
// (rate limited, not one per interval) and a metric, not a debug line.
func TestHeartbeatFailuresAreWarnedAndCounted(t *testing.T) {
	o := startObserved(t, func(c *config.Capture) { c.HeartbeatInterval = 200 * time.Millisecond })
	e, conn, logs, reg, db, ctx := env, o.conn, o.logs, o.reg, o.conn.Config().Database, t.Context()
	waitFor(t, 10*time.Second, "a heartbeat connection", func() bool {
		var n int
		_ = conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1
			AND application_name = 'cdcsync-capture' AND backend_type = 'client backend'`, db).Scan(&n)
		return n > 0
	})

	// New connections to the database are refused from now on (the
	// replication connection stays), and the heartbeat's is cut.
	dbIdent := pgx.Identifier{db}.Sanitize()
	if err := e.PG.Exec(ctx, "postgres", "ALTER DATABASE "+dbIdent+" ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.PG.Exec(context.Background(), "postgres", "ALTER DATABASE "+dbIdent+" ALLOW_CONNECTIONS true")
	})
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1
		AND application_name = 'cdcsync-capture' AND backend_type = 'client backend'`, db); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "heartbeat failures counted", func() bool {
		return counterTotal(t, reg, "cdcsync_capture_heartbeat_failures_total") >= 6
	})
	if n := logs.count(slog.LevelWarn, "heartbeat: cannot connect"); n != 1 {
		t.Errorf("%d warnings about the heartbeat connection after ≥ 5 failed attempts, want exactly 1 (rate limited)", n)
	}
}

// counterTotal sums every series of counter name (-1 when absent).
func counterTotal(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range f.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
		return sum
	}
	return -1
}

package capture

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// runCaptureExpectingFailure runs the capture binary and returns its exit
// code and output once it exits by itself.
func runCaptureExpectingFailure(t *testing.T, env []string) (int, string) {
	t.Helper()
	proc := testenv.StartProcess(t, "capture", buildBinary(t), env, "capture")
	code, err := proc.Wait(30 * time.Second)
	if err != nil {
		t.Fatalf("capture kept running: %v\n%s", err, proc.Tail(2000))
	}
	return code, proc.Output()
}

func TestCaptureRefusesUnusableSources(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	role := testenv.RandomName("plain")
	mustExec(t, conn, ordersDDL, "CREATE TABLE nopk (a int, b text)",
		"CREATE ROLE "+role+" LOGIN", "GRANT SELECT ON ALL TABLES IN SCHEMA public TO "+role)
	t.Cleanup(func() { _ = e.PG.Exec(ctx, "postgres", "DROP ROLE IF EXISTS "+role) })

	cases := []struct {
		name   string
		mutate func(env []string) []string
		want   string
	}{
		{"missing table", func(env []string) []string { return append(env, "CDCSYNC_TABLES=public.nope") },
			"captured table does not exist: public.nope"},
		{"no primary key", func(env []string) []string { return append(env, "CDCSYNC_TABLES=public.nopk") },
			"no primary key"},
		{"role without REPLICATION", func(env []string) []string {
			return append(env, "CDCSYNC_SOURCE_URL=postgres://"+role+"@127.0.0.1:"+itoa(e.PG.Port)+"/"+db+"?sslmode=disable")
		}, "WITH REPLICATION as a superuser"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(e, db)
			code, out := runCaptureExpectingFailure(t, c.mutate(captureEnv(cfg)))
			if code != 1 || !strings.Contains(out, c.want) {
				t.Fatalf("exit %d, want 1 with %q in:\n%s", code, c.want, out)
			}
		})
	}

	t.Run("wal_level not logical", func(t *testing.T) {
		pg, err := testenv.StartPostgres(testenv.WithSetting("wal_level", "replica"))
		if err != nil {
			t.Fatal(err)
		}
		defer pg.Close()
		if err := pg.Exec(ctx, "postgres", ordersDDL); err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(e, "postgres")
		cfg.SourceURL = pg.URL("postgres")
		code, out := runCaptureExpectingFailure(t, captureEnv(cfg))
		if code != 1 || !strings.Contains(out, "wal_level") || !strings.Contains(out, "set wal_level = logical") {
			t.Fatalf("exit %d, output:\n%s", code, out)
		}
	})
}

// TestSlotHeldByAnotherCapture covers both behaviours when the slot is in
// use: CDCSYNC_SLOT_BUSY=fail exits with a clear error; the default waits as
// a standby and takes over within 15 s once the active capture is killed.
func TestSlotHeldByAnotherCapture(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, ordersDDL)
	cfg := testConfig(e, db)
	cfg.Snapshot = "never"
	bin := buildBinary(t)
	first := testenv.StartProcess(t, "capture-1", bin, captureEnv(cfg), "capture")
	activePID := func() int {
		var pid *int
		_ = conn.QueryRow(ctx, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", cfg.Slot).Scan(&pid)
		if pid == nil {
			return 0
		}
		return *pid
	}
	waitFor(t, 30*time.Second, "first capture to stream", func() bool { return activePID() != 0 })
	firstBackend := activePID()

	code, out := runCaptureExpectingFailure(t, append(captureEnv(cfg), "CDCSYNC_SLOT_BUSY=fail"))
	if code != 1 || !strings.Contains(out, "replication slot is active in another process") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}

	standby := testenv.StartProcess(t, "capture-2", bin, captureEnv(cfg), "capture")
	time.Sleep(3 * time.Second)
	if standby.Exited() {
		t.Fatalf("standby exited:\n%s", standby.Output())
	}
	if err := first.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitFor(t, 15*time.Second, "standby to take over the slot", func() bool {
		pid := activePID()
		return pid != 0 && pid != firstBackend
	})
	t.Logf("standby took over %v after the active capture was killed", time.Since(killed).Round(100*time.Millisecond))
	mustExec(t, conn, "INSERT INTO orders VALUES (1, 1, 1, 'created', NULL)")
}

func itoa(n int) string { return strconv.Itoa(n) }

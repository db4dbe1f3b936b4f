package outbox_test

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// pg is the Postgres cluster the integration tests share (each test creates
// its own database); nil under -short. Only Postgres is needed here, so this
// does not start the whole testenv.Env.
var pg *testenv.Postgres

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	p, err := testenv.StartPostgres()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start postgres:", err)
		return 1
	}
	defer p.Close()
	pg = p
	return m.Run()
}

// requirePG skips integration tests under -short.
func requirePG(t *testing.T) *testenv.Postgres {
	t.Helper()
	if pg == nil {
		t.Skip("integration test: needs Postgres (skipped with -short)")
	}
	return pg
}

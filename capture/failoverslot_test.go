package capture

import (
	"context"
	"testing"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// TestCreateSlotCommand: a failover slot on Postgres 17 and later, the
// classic command before (the only form these tests can run: Postgres 15).
func TestCreateSlotCommand(t *testing.T) {
	cases := []struct {
		action string
		major  int
		want   string
	}{
		{"EXPORT_SNAPSHOT", 15, `CREATE_REPLICATION_SLOT "cdc" LOGICAL pgoutput EXPORT_SNAPSHOT`},
		{"NOEXPORT_SNAPSHOT", 16, `CREATE_REPLICATION_SLOT "cdc" LOGICAL pgoutput NOEXPORT_SNAPSHOT`},
		{"EXPORT_SNAPSHOT", 17, `CREATE_REPLICATION_SLOT "cdc" LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER true)`},
		{"NOEXPORT_SNAPSHOT", 18, `CREATE_REPLICATION_SLOT "cdc" LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER true)`},
	}
	for _, c := range cases {
		if got := createSlotCommand("cdc", c.action, c.major); got != c.want {
			t.Errorf("%s on %d: %s, want %s", c.action, c.major, got, c.want)
		}
	}
}

// TestServerMajor reads the major version from a real server's
// connection, and the slot it creates streams (Postgres 15 here).
func TestServerMajor(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	repl := replicationConn(context.Background(), t, e.PG.URL(db), nil)
	major := serverMajor(repl)
	if major < 15 {
		t.Fatalf("serverMajor = %d (server_version %q)", major, repl.ParameterStatus("server_version"))
	}
	slot := testenv.RandomName("slot")
	res, err := createLogicalSlot(t.Context(), repl, slot, "NOEXPORT_SNAPSHOT")
	if err != nil {
		t.Fatalf("create slot on Postgres %d: %v", major, err)
	}
	if res.SlotName != slot || res.ConsistentPoint == "" {
		t.Errorf("result %+v", res)
	}
}

package capture

import (
	"context"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// createLogicalSlot creates the pgoutput slot name with snapshotAction
// (EXPORT_SNAPSHOT or NOEXPORT_SNAPSHOT). On Postgres 17 and later it is a
// failover slot: with sync_replication_slots = on on a physical standby (and
// synchronized_standby_slots naming that standby's slot on the primary, so
// capture never gets ahead of it), the standby keeps a synchronised copy,
// and after a failover capture resumes from it with nothing lost. Older
// servers have no such option: a failover loses the slot, which capture
// then detects (checkSlot). Only Postgres 15 is installable where cdcsync
// is tested, so the Postgres 17 command is built from the protocol
// documentation and is untested against a server.
func createLogicalSlot(ctx context.Context, repl *pgconn.PgConn, name, snapshotAction string) (pglogrepl.CreateReplicationSlotResult, error) {
	return pglogrepl.ParseCreateReplicationSlot(repl.Exec(ctx, createSlotCommand(name, snapshotAction, serverMajor(repl))))
}

// createSlotCommand is the replication command for createLogicalSlot on a
// server of the given major version.
func createSlotCommand(name, snapshotAction string, major int) string {
	if major < 17 {
		// The form every supported server accepts (what pglogrepl sends).
		return "CREATE_REPLICATION_SLOT " + pgx.Identifier{name}.Sanitize() + " LOGICAL pgoutput " + snapshotAction
	}
	snapshot := "nothing"
	switch snapshotAction {
	case "EXPORT_SNAPSHOT":
		snapshot = "export"
	case "USE_SNAPSHOT":
		snapshot = "use"
	}
	return "CREATE_REPLICATION_SLOT " + pgx.Identifier{name}.Sanitize() + " LOGICAL pgoutput (SNAPSHOT '" + snapshot + "', FAILOVER true)"
}

// serverMajor is the major version the server reported at connection
// ("15.8 (Debian …)" -> 15); 0 when it cannot be read.
func serverMajor(conn *pgconn.PgConn) int {
	v := conn.ParameterStatus("server_version")
	if i := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		v = v[:i]
	}
	n, _ := strconv.Atoi(v)
	return n
}

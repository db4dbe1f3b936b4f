package capture

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// TestStateTablesCreatedConcurrently: capture and `cdcsync replay
// snapshot` (RequestBackfill) create the state schema and tables each on
// first use, and may do so at the same moment. CREATE ... IF NOT EXISTS
// run together still fails in one of them, with unique_violation on the
// catalog or with duplicate_table / duplicate_schema
// (TestBackfillResumesAfterSIGKILL failed in the full suite with
// 'create state table "cdcsync"."backfills": ERROR: relation "backfills"
// already exists (SQLSTATE 42P07)'): both must go on.
func TestStateTablesCreatedConcurrently(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	ctx := context.Background()
	const racers = 6
	conns := make([]*pgx.Conn, racers)
	for i := range conns {
		conns[i] = connect(t, e, db)
	}
	for round := range 15 {
		schema := testenv.RandomName("state")
		start := make(chan struct{})
		errs := make([]error, racers)
		var wg sync.WaitGroup
		for i, conn := range conns {
			wg.Go(func() {
				<-start
				errs[i] = ensureStateTable(ctx, conn, schema, "backfills", "(id bigint PRIMARY KEY)")
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, creator %d: %v", round, i, err)
			}
		}
	}
}

package capture

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestLeastPrivilegeRole runs capture as the role the README recommends:
// REPLICATION, SELECT on the captured table, a publication and a state
// schema created beforehand by an administrator, and no CREATE on the
// database.
func TestLeastPrivilegeRole(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	role := testenv.RandomName("capture")
	cfg := testConfig(e, db)
	mustExec(t, conn, ordersDDL,
		"CREATE ROLE "+role+" LOGIN REPLICATION",
		"GRANT SELECT ON orders TO "+role,
		"CREATE PUBLICATION "+cfg.Publication+" FOR TABLE orders WITH (publish_via_partition_root = true)",
		"CREATE SCHEMA cdcsync AUTHORIZATION "+role,
		"INSERT INTO orders VALUES (1, 1, 1, 'created', NULL)")
	t.Cleanup(func() {
		_ = e.PG.Exec(ctx, db, "DROP SCHEMA IF EXISTS cdcsync CASCADE", "DROP OWNED BY "+role)
		_ = e.PG.Exec(ctx, "postgres", "DROP ROLE IF EXISTS "+role)
	})
	var canCreate bool
	if err := conn.QueryRow(ctx, "SELECT has_database_privilege($1, current_database(), 'CREATE')", role).Scan(&canCreate); err != nil || canCreate {
		t.Fatalf("role should not have CREATE on the database (%v, %v)", canCreate, err)
	}
	cfg.SourceURL = "postgres://" + role + "@127.0.0.1:" + strconv.Itoa(e.PG.Port) + "/" + db + "?sslmode=disable"
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	stop := startCapture(t, cfg)
	waitFor(t, 30*time.Second, "snapshot row", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 1 })
	mustExec(t, conn, "UPDATE orders SET status = 'paid' WHERE id = 1")
	waitFor(t, 30*time.Second, "streamed change", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 2 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

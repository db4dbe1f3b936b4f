package capture

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestSourceURLWithoutDatabase connects with a URL that names no database
// (Postgres then uses the role's name): events carry the database's real
// name in source.db, and a second start accepts the slot it created
// (issue 10 item 9).
func TestSourceURLWithoutDatabase(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	role := pgx.Identifier{db}.Sanitize() // the role's name is the database's
	mustExec(t, conn, ordersDDL, "CREATE ROLE "+role+" LOGIN SUPERUSER",
		"INSERT INTO orders VALUES (1, 1, 1, 'created', NULL)")
	t.Cleanup(func() {
		_ = e.PG.Exec(ctx, "postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '"+db+"'")
		_ = e.PG.Exec(ctx, db, "DROP OWNED BY "+role)
		_ = e.PG.Exec(ctx, "postgres", "DROP ROLE IF EXISTS "+role)
	})
	cfg := testConfig(e, db)
	cfg.SourceURL = "postgres://" + db + "@127.0.0.1:" + strconv.Itoa(e.PG.Port) + "/?sslmode=disable"
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")

	stop := startCapture(t, cfg)
	waitFor(t, 30*time.Second, "snapshot row", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	stop = startCapture(t, cfg)
	waitSlotActive(t, conn, cfg.Slot)
	mustExec(t, conn, "UPDATE orders SET status = 'paid' WHERE id = 1")
	waitFor(t, 30*time.Second, "streamed change after the restart", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 2 })
	if err := stop(); err != nil {
		t.Fatalf("second start: %v", err)
	}
	for _, m := range readTopic(t, e.Kafka.Brokers(), topic) {
		if m.Event != nil && m.Event.Source.DB != db {
			t.Errorf("%s event at offset %d: source.db %q, want %q", m.Event.Op, m.Offset, m.Event.Source.DB, db)
		}
	}
}

package capture

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestCaptureOverTLS runs capture against a Postgres that serves TLS, with
// sslmode=verify-full and the CA given in the URL, and checks that the
// replication connection really is encrypted.
func TestCaptureOverTLS(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := context.Background()
	pg, err := testenv.StartPostgres(testenv.WithTLS())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Close)
	db := pg.CreateDB(t)
	if err := pg.Exec(ctx, db, ordersDDL, "INSERT INTO orders VALUES (1, 1, 1, 'created', NULL)"); err != nil {
		t.Fatal(err)
	}
	own := &testenv.Env{PG: pg, Kafka: e.Kafka}
	cfg := testConfig(own, db)
	u, err := url.Parse(pg.URL(db))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("sslmode", "verify-full")
	q.Set("sslrootcert", pg.TLS.CA)
	u.RawQuery = q.Encode()
	cfg.SourceURL = u.String()
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	stop := startCapture(t, cfg)
	waitFor(t, 30*time.Second, "snapshot row over TLS", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 1 })
	if err := pg.Exec(ctx, db, "UPDATE orders SET status = 'paid' WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "streamed change over TLS", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= 2 })

	conn := connect(t, own, db)
	var encrypted bool
	err = conn.QueryRow(ctx, `SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid
		WHERE r.application_name = 'cdcsync-capture'`).Scan(&encrypted)
	if err != nil || !encrypted {
		t.Fatalf("replication connection encrypted = %v (%v)", encrypted, err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// The wrong CA is refused, not silently accepted.
	other, err := testenv.GenerateTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	q.Set("sslrootcert", other.CA)
	u.RawQuery = q.Encode()
	bad := testConfig(own, db)
	bad.SourceURL = u.String()
	c := &capturer{cfg: bad}
	if _, err := c.connect(ctx); err == nil {
		t.Fatal("connected although the server's certificate is signed by another CA")
	}
}

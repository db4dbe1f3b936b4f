package capture

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestSnapshotMemoryIsBoundedByBytes snapshots rows of 1 MB with a chunk
// size (1,000 rows) that would hold the whole table in one chunk: the
// chunk ends at CDCSYNC_SNAPSHOT_MAX_CHUNK_BYTES instead, so capture's peak
// RSS stays bounded (issue 10 item 12, backfill buffers).
func TestSnapshotMemoryIsBoundedByBytes(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	bin := buildBinary(t)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	const rows = 150 // 150 MB of row values
	mustExec(t, conn, ordersDDL,
		fmt.Sprintf(`INSERT INTO orders SELECT g, g %% 10, 1, 'created', repeat('n', 1000000) FROM generate_series(1, %d) g`, rows))
	cfg := testConfig(e, db)
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	proc := testenv.StartProcess(t, "capture", bin, append(captureEnv(cfg),
		"CDCSYNC_SNAPSHOT_CHUNK_SIZE=1000",
		fmt.Sprintf("CDCSYNC_SNAPSHOT_MAX_CHUNK_BYTES=%d", 8<<20),
		fmt.Sprintf("CDCSYNC_MAX_IN_FLIGHT_BYTES=%d", 16<<20),
		fmt.Sprintf("CDCSYNC_KAFKA_MAX_MESSAGE_BYTES=%d", 2<<20)), "capture")
	waitFor(t, 180*time.Second, "the snapshot on kafka", func() bool { return topicCount(t, e.Kafka.Brokers(), topic) >= rows })
	rss := peakRSSThenStop(t, proc)
	// A chunk holds about 8 MiB of rows (and their encoding); in flight
	// are at most 16 MiB; the rest is the base, the producer's request
	// buffers and the GC's headroom. Unbounded, the one chunk is the
	// whole 150 MB table, encoded twice over.
	const bound = 160 << 20
	t.Logf("peak RSS %.1f MiB for a snapshot of %d rows of 1 MB, chunks of 1,000 rows bounded to 8 MiB (bound %d MiB)",
		float64(rss)/(1<<20), rows, bound>>20)
	if rss > bound {
		t.Fatalf("peak RSS %d MiB exceeds %d MiB", rss>>20, bound>>20)
	}
	if !strings.Contains(proc.Output(), "initial snapshot done") {
		t.Errorf("the snapshot did not finish:\n%s", proc.Tail(2000))
	}
}

// lockedBuffer is an io.Writer safe for a logger shared by goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestBackfillWindowKeysAreBoundedByBytes holds a chunk's window open with
// a long transaction while another one changes many keys of the table: the
// changed-key set outgrows CDCSYNC_SNAPSHOT_MAX_CHUNK_BYTES, the window is
// given up and the chunk read again, and the topic still ends exact
// (issue 10 item 12, the window's changed-key set).
func TestBackfillWindowKeysAreBoundedByBytes(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	ctx := t.Context()
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, bfOrdersDDL)
	const rows = 3000
	bfLoadOrders(t, conn, rows)
	cfg := testConfig(e, db)
	cfg.Snapshot = "never"
	cfg.SnapshotMaxBytes = 64 << 10 // about 800 keys
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")

	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Run(runCtx, cfg, logger, nil) }()
	t.Cleanup(func() {
		cancel()
		<-done
		t.Log(logs.String())
	})
	waitSlotActive(t, conn, cfg.Slot)

	long := connect(t, e, db)
	tx, err := long.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "UPDATE orders SET rev = rev + 1 WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	bfs, err := RequestBackfill(ctx, conn, cfg, BackfillRequest{Tables: []string{"public.orders"}, ChunkSize: 5000})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the backfill to wait for the long transaction", func() bool {
		var n int
		_ = conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cdcsync-backfill'
			AND query LIKE '%virtualtransaction = ANY%'`).Scan(&n)
		return n > 0
	})
	// 2,000 keys change inside the window.
	mustExec(t, conn, "UPDATE orders SET rev = rev + 1, status = 'paid' WHERE id BETWEEN 2 AND 2001")
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	bf := bfWaitDone(t, conn, cfg, bfs[0].ID, 90*time.Second)
	if bf.Status != BackfillDone {
		t.Fatalf("backfill %s: %s", bf.Status, bf.Error)
	}
	if !strings.Contains(logs.String(), "exceed CDCSYNC_SNAPSHOT_MAX_CHUNK_BYTES") {
		t.Errorf("the window's keys did not hit the bound (no retry logged)")
	}
	waitAllConfirmed(t, conn, cfg.Slot)
	bfCheckTopic(t, conn, e.Kafka.Brokers(), topic)
}

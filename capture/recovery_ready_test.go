package capture

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/status"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestRecoveringAfterLostSlotIsNotReady: with CDCSYNC_SNAPSHOT=when_needed,
// while capture re-reads the table after its slot was lost, /readyz says
// "recovering: re-snapshot after lost slot, N/M rows", `cdcsync status`
// says RECOVERING and cdcsync_capture_recovering is 1; no watermark of the
// new source epoch reaches the topic before the resnapshot-done record
// (so no sink claims the new epoch before its sweep); once the record is
// on Kafka capture is ready and status says nothing more.
func TestRecoveringAfterLostSlotIsNotReady(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	db := e.PG.CreateDB(t)
	conn := connect(t, e, db)
	mustExec(t, conn, ordersDDL, `INSERT INTO orders SELECT g, 1 + g % 9, 1, 'created', NULL FROM generate_series(1, 600) g`)
	cfg := testConfig(e, db)
	cfg.Snapshot = "when_needed"
	cfg.WatermarkInterval = 10 * time.Millisecond
	ctx := context.Background()

	stop := startCapture(t, cfg)
	waitSlotActive(t, conn, cfg.Slot)
	waitFor(t, 60*time.Second, "the initial snapshot", func() bool {
		var done bool
		_ = conn.QueryRow(ctx, `SELECT snapshot_done FROM cdcsync.capture_state WHERE slot = $1`, cfg.Slot).Scan(&done)
		return done
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The slot is lost (capture recorded it); the re-snapshot reads small
	// chunks, so that it takes a while.
	waitFor(t, 30*time.Second, "the slot released", func() bool {
		var active bool
		_ = conn.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&active)
		return !active
	})
	mustExec(t, conn, `SELECT pg_drop_replication_slot('`+cfg.Slot+`')`)
	cfg.SnapshotChunkSize = 25

	ready := &readinessLog{}
	reg := prometheus.NewRegistry()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Run(rctx, cfg, slog.New(slog.DiscardHandler), reg, WithReadiness(ready)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	want := regexp.MustCompile(`^recovering: re-snapshot after lost slot, \d+/\d+ rows`)
	var recovering, statusSaid bool
	deadline := time.Now().Add(90 * time.Second)
	for {
		ok, reason := ready.get()
		if ok {
			break
		}
		if want.MatchString(reason) {
			if !recovering {
				t.Logf("/readyz: %s", reason)
				if v := gaugeValue(t, reg, "cdcsync_capture_recovering"); v != 1 {
					t.Errorf("cdcsync_capture_recovering = %v while recovering, want 1", v)
				}
			}
			recovering = true
			if !statusSaid {
				r, text := captureStatus(t, cfg)
				statusSaid = r.Slot.Recovering != ""
				if statusSaid && !strings.Contains(text, "RECOVERING: re-snapshot after lost slot") {
					t.Errorf("status text does not say capture recovers:\n%s", text)
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("capture not ready within 90s after the lost slot: %s", reason)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !recovering {
		t.Error("/readyz never said capture recovers from the lost slot during the re-snapshot")
	}
	if !statusSaid {
		t.Error("status never said capture recovers from the lost slot during the re-snapshot")
	}
	if v := gaugeValue(t, reg, "cdcsync_capture_recovering"); v != 0 {
		t.Errorf("cdcsync_capture_recovering = %v once ready, want 0", v)
	}
	// Status judges by the slot's confirmed position on the server,
	// which follows capture's within a status interval.
	waitFor(t, 10*time.Second, "status to stop saying RECOVERING", func() bool {
		r, _ := captureStatus(t, cfg)
		return r.Slot.Recovering == ""
	})

	// On the topic: the resnapshot-done record, and no watermark of the
	// new epoch at or before the end of the re-snapshot.
	var epoch int64
	var end string
	if err := conn.QueryRow(ctx, `SELECT source_epoch, resnapshot_lsn::text FROM cdcsync.capture_state WHERE slot = $1`,
		cfg.Slot).Scan(&epoch, &end); err != nil {
		t.Fatal(err)
	}
	endLSN, err := pglogrepl.ParseLSN(end)
	if err != nil {
		t.Fatal(err)
	}
	var marks, early int
	doneRecords := 0
	testenv.ConsumeTopic(t, cfg.Kafka.Brokers, pipeline.Topic(cfg.TopicPrefix, "public", "orders"), func(m *sarama.ConsumerMessage) {
		for _, h := range m.Headers {
			if string(h.Key) == pipeline.HeaderControl && string(h.Value) == pipeline.ControlResnapshotDone {
				doneRecords++
			}
		}
		wm, ok, err := pipeline.ParseWatermark(m.Headers)
		if err != nil || !ok || wm.Epoch != uint32(epoch) {
			return
		}
		marks++
		if wm.LSN <= endLSN {
			early++
		}
	})
	if doneRecords != 1 {
		t.Errorf("%d resnapshot-done records, want 1", doneRecords)
	}
	if marks == 0 || early > 0 {
		t.Errorf("%d watermarks of epoch %d, %d of them at or before the re-snapshot's end %s: want some, none before", marks, epoch, early, end)
	}
}

// captureStatus collects `cdcsync status` for cfg's pipeline.
func captureStatus(t *testing.T, cfg config.Capture) (*status.Report, string) {
	t.Helper()
	var sc config.Status
	if err := config.Defaults(&sc); err != nil {
		t.Fatal(err)
	}
	sc.SourceURL, sc.Slot, sc.Tables, sc.TopicPrefix, sc.StateSchema = cfg.SourceURL, cfg.Slot, cfg.Tables, cfg.TopicPrefix, cfg.StateSchema
	sc.Kafka.Brokers = cfg.Kafka.Brokers
	c, err := status.New(t.Context(), sc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Collect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	if err := status.WriteText(&text, r); err != nil {
		t.Fatal(err)
	}
	return r, text.String()
}

// The recovery holds watermarks at every confirmed LSN until the
// resnapshot message's LSN is known, and then up to it; it ends (and
// /readyz passes readiness through) once capture confirmed past it.
func TestRecoveryEndsPastTheResnapshotMessage(t *testing.T) {
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &recovery{log: slog.New(slog.DiscardHandler), metrics: m, active: true, rows: map[int64][2]int64{1: {10, 40}, 2: {0, 60}}}
	if !r.recovering(0x9000) {
		t.Fatal("not recovering before the resnapshot message was seen")
	}
	if reason, on := r.status(0x9000); !on || reason != "recovering: re-snapshot after lost slot, 10/100 rows" {
		t.Fatalf("status = %q, %v", reason, on)
	}
	r.noteRows(2, 60, 60)
	r.noteRows(1, 40, 40)
	r.resnapshotSent(0x9100)
	if !r.recovering(0x9100) || r.recovering(0x9101) {
		t.Fatal("want recovering up to the message's LSN, not past it")
	}
	if reason, on := r.status(0x9100); !on || !strings.HasPrefix(reason, "recovering: re-snapshot after lost slot, 100/100 rows") {
		t.Fatalf("status at the message = %q, %v", reason, on)
	}
	if _, on := r.status(0x9101); on || r.recovering(0) {
		t.Fatal("still recovering once confirmed past the message")
	}
	var none *recovery // a session without one
	if _, on := none.status(0); on || none.recovering(0) {
		t.Fatal("a nil recovery recovers")
	}
}

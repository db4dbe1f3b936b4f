package main

// eos: exactly-once against at-least-once on the same WAL.
//
//	nice go run ./test/bench eos [-rows 200000] [-tx 1000] [-runs 2] [-big 1000000]
//
// Slots are created before the WAL is written, one per capture run, so
// every run drains the same changes. Runs of the two modes alternate
// (at-least-once, exactly-once, then exactly-once, at-least-once, ...) so
// that neither profits from a warmer cache; the best run of each mode
// counts. A run ends when the slot's confirmed LSN reaches the end of the
// WAL: capture confirms only what is on Kafka (acknowledged, or committed
// in exactly-once mode), i.e. visible to a read_committed reader. CPU is
// the capture process's user+system time (rusage), RSS its peak (VmHWM).
// Then one transaction of -big rows, each mode once: peak RSS and the time
// from capture's start to the first change a read_committed reader can
// read.

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/kafkaclient"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// Delivery modes, as CDCSYNC_DELIVERY spells them.
var modes = []string{"at-least-once", "exactly-once"}

// eosRun is one capture run's measurements.
type eosRun struct {
	mode         string
	elapsed      time.Duration // start to the WAL end confirmed
	cpu          time.Duration // user + system
	rss          int64         // peak, bytes
	firstVisible time.Duration // start to the first change readable read_committed
}

func benchEOS(args []string) error {
	fs := flag.NewFlagSet("eos", flag.ExitOnError)
	rows := fs.Int("rows", 200000, "rows in small transactions")
	perTx := fs.Int("tx", 1000, "rows per small transaction")
	runs := fs.Int("runs", 2, "runs of each mode over the small transactions")
	big := fs.Int("big", 1000000, "rows of the single large transaction (0: skip)")
	_ = fs.Parse(args)
	ctx := context.Background()

	bin, pg, kafka, err := startBench(ctx)
	if err != nil {
		return err
	}
	defer pg.Close()
	defer kafka.Close()
	const db = "bench"
	if err := pg.Exec(ctx, db, `CREATE PUBLICATION bench FOR TABLE orders`); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, pg.URL(db))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	slot := func(name string) error {
		_, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, name)
		return err
	}
	for i := range *runs {
		for _, m := range modes {
			if err := slot(slotName(m, i)); err != nil {
				return err
			}
		}
	}
	fmt.Printf("loading %d rows in transactions of %d...\n", *rows, *perTx)
	for start := 1; start <= *rows; start += *perTx {
		end := min(start+*perTx-1, *rows)
		if err := pg.Exec(ctx, db, fmt.Sprintf(
			`INSERT INTO orders (id, item_id, quantity, status) SELECT g, g %% 1000, 1 + g %% 5, 'created' FROM generate_series(%d, %d) g`, start, end)); err != nil {
			return err
		}
	}
	walEnd, err := currentLSN(ctx, conn)
	if err != nil {
		return err
	}
	best := map[string]eosRun{}
	// Each run drops its slot when done, so that the slots left do not
	// hold WAL the next runs do not need.
	for i := range *runs {
		order := modes
		if i%2 == 1 {
			order = []string{modes[1], modes[0]}
		}
		for _, m := range order {
			r, err := runCaptureMode(ctx, bin, pg.URL(db), kafka, conn, m, slotName(m, i), walEnd, false)
			if err != nil {
				return err
			}
			if err := dropSlot(ctx, conn, slotName(m, i)); err != nil {
				return err
			}
			fmt.Printf("run %d %-13s %8.0f rows/s  (%v)  CPU %5.2f µs/row  peak RSS %5.1f MiB\n", i+1, m,
				float64(*rows)/r.elapsed.Seconds(), r.elapsed.Round(time.Millisecond), usPerRow(r.cpu, *rows), mib(r.rss))
			if b, ok := best[m]; !ok || r.elapsed < b.elapsed {
				best[m] = r
			}
		}
	}
	alo, eos := best[modes[0]], best[modes[1]]
	fmt.Printf("rows: %d in %d-row transactions (WAL end %s)\n", *rows, *perTx, walEnd)
	fmt.Printf("best of %d: at-least-once %.0f rows/s, %.2f µs CPU/row; exactly-once %.0f rows/s, %.2f µs CPU/row\n", *runs,
		float64(*rows)/alo.elapsed.Seconds(), usPerRow(alo.cpu, *rows), float64(*rows)/eos.elapsed.Seconds(), usPerRow(eos.cpu, *rows))
	fmt.Printf("ratio exactly-once / at-least-once: throughput %.2f, CPU per row %.2f\n",
		alo.elapsed.Seconds()/eos.elapsed.Seconds(), eos.cpu.Seconds()/alo.cpu.Seconds())

	if *big > 0 {
		// The small runs' slots are drained; the large transaction's slots
		// see only it.
		for _, m := range modes {
			if err := slot(slotName(m, -1)); err != nil {
				return err
			}
		}
		fmt.Printf("one transaction of %d rows...\n", *big)
		if err := pg.Exec(ctx, db, fmt.Sprintf(
			`INSERT INTO orders (id, item_id, quantity, status) SELECT g, g %% 1000, 1 + g %% 5, 'created' FROM generate_series(%d, %d) g`, *rows+1, *rows+*big)); err != nil {
			return err
		}
		bigEnd, err := currentLSN(ctx, conn)
		if err != nil {
			return err
		}
		for _, m := range modes {
			r, err := runCaptureMode(ctx, bin, pg.URL(db), kafka, conn, m, slotName(m, -1), bigEnd, true)
			if err != nil {
				return err
			}
			fmt.Printf("%d-row transaction, %-13s: %8.0f rows/s (%v), first change visible (read_committed) after %v, peak RSS %.1f MiB, CPU %.2f µs/row\n",
				*big, m, float64(*big)/r.elapsed.Seconds(), r.elapsed.Round(time.Millisecond), r.firstVisible.Round(time.Millisecond), mib(r.rss), usPerRow(r.cpu, *big))
		}
	}
	return nil
}

// slotName is the slot of run i of mode m; run -1 is the large transaction's.
func slotName(m string, i int) string {
	name := strings.ReplaceAll(m, "-", "_")
	if i < 0 {
		return name + "_big"
	}
	return fmt.Sprintf("%s_%d", name, i)
}

func currentLSN(ctx context.Context, conn *pgx.Conn) (pglogrepl.LSN, error) {
	var s string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		return 0, err
	}
	return pglogrepl.ParseLSN(s)
}

// dropSlot drops a slot once its walsender has gone.
func dropSlot(ctx context.Context, conn *pgx.Conn, name string) error {
	var err error
	for range 50 {
		if _, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, name); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("drop slot %s: %w", name, err)
}

func usPerRow(cpu time.Duration, rows int) float64 {
	return float64(cpu.Microseconds()) / float64(rows)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// runCaptureMode drains slot with a capture process in mode into its own
// topics until the slot's confirmed LSN reaches walEnd. With watch it also
// times the first change a read_committed reader can read.
func runCaptureMode(ctx context.Context, bin, url string, kafka *testenv.Kafka, conn *pgx.Conn, mode, slot string, walEnd pglogrepl.LSN, watch bool) (eosRun, error) {
	prefix := slot
	topic := pipeline.Topic(prefix, "public", "orders")
	if err := kafka.CreateTopic(topic, 4); err != nil {
		return eosRun{}, err
	}
	proc := exec.Command(bin, "capture")
	proc.Env = append(os.Environ(),
		"CDCSYNC_SOURCE_URL="+url, "CDCSYNC_SLOT="+slot, "CDCSYNC_PUBLICATION=bench",
		"CDCSYNC_SNAPSHOT=never", "CDCSYNC_KAFKA_BROKERS="+strings.Join(kafka.Brokers(), ","),
		"CDCSYNC_TOPIC_PREFIX="+prefix, "CDCSYNC_DELIVERY="+mode,
		"CDCSYNC_STATUS_INTERVAL=50ms", "CDCSYNC_HTTP_ADDR=", "CDCSYNC_LOG_LEVEL=warn")
	var logs bytes.Buffer
	proc.Stdout, proc.Stderr = &logs, &logs
	var reader sarama.Client
	if watch {
		cfg := testenv.SaramaConfig()
		cfg.Consumer.IsolationLevel = sarama.ReadCommitted
		c, err := sarama.NewClient(kafka.Brokers(), cfg)
		if err != nil {
			return eosRun{}, err
		}
		defer c.Close()
		reader = c
	}
	r := eosRun{mode: mode}
	t0 := time.Now()
	if err := proc.Start(); err != nil {
		return r, err
	}
	defer func() { _ = proc.Process.Kill() }()
	for {
		var s *string
		if err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&s); err != nil {
			return r, err
		}
		if s != nil {
			if lsn, err := pglogrepl.ParseLSN(*s); err == nil && lsn >= walEnd {
				r.elapsed = time.Since(t0)
				break
			}
		}
		if watch && r.firstVisible == 0 {
			if ok, err := changeVisible(reader, topic); err != nil {
				return r, err
			} else if ok {
				r.firstVisible = time.Since(t0)
			}
		}
		if time.Since(t0) > 20*time.Minute {
			return r, fmt.Errorf("%s capture did not confirm %s in 20 minutes:\n%s", mode, walEnd, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if watch && r.firstVisible == 0 {
		r.firstVisible = r.elapsed
	}
	rss, err := testenv.PeakRSS(proc.Process.Pid)
	if err != nil {
		return r, err
	}
	r.rss = rss
	_ = proc.Process.Signal(syscall.SIGTERM)
	if err := proc.Wait(); err != nil {
		return r, fmt.Errorf("%s capture after SIGTERM: %v:\n%s", mode, err, logs.String())
	}
	r.cpu = proc.ProcessState.UserTime() + proc.ProcessState.SystemTime()
	if strings.Contains(logs.String(), "ignoring unknown variable") && strings.Contains(logs.String(), "CDCSYNC_DELIVERY") {
		fmt.Fprintf(os.Stderr, "warning: this cdcsync does not know CDCSYNC_DELIVERY; both runs are at-least-once\n")
	}
	return r, nil
}

// changeVisible reports whether a read_committed reader can read a change
// (not a watermark) of topic now: it reads each partition up to its last
// stable offset.
func changeVisible(client sarama.Client, topic string) (bool, error) {
	parts, err := client.Partitions(topic)
	if err != nil {
		return false, err
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return false, err
	}
	defer consumer.Close()
	for _, p := range parts {
		end, err := kafkaclient.StableOffset(client, topic, p)
		if err != nil {
			return false, err
		}
		if end == 0 {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			return false, err
		}
		found := false
	read:
		for {
			select {
			case m := <-pc.Messages():
				if !pipeline.IsWatermark(m.Headers) {
					found = true
					break read
				}
				if m.Offset+1 >= end {
					break read
				}
			case <-time.After(500 * time.Millisecond):
				break read // the rest below the end are markers or aborted
			}
		}
		pc.Close()
		if found {
			return true, nil
		}
	}
	return false, nil
}

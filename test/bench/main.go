// Command bench measures cdcsync against a baseline on this machine, with
// throwaway services, and prints ratios measured in the same run:
//
//	go run ./test/bench capture [-rows 200000] [-tx 1000]
//
// capture: loads the same WAL for two slots, drains one with pg_recvlogical
// (pgoutput, to /dev/null) and the other with `cdcsync capture` into a
// kfake broker, and reports rows/s of each (capture counts rows the broker
// acknowledged), their ratio, and capture's peak RSS. Capture runs with
// CDCSYNC_DELIVERY=at-least-once, comparable with earlier releases; bench
// eos sets the default, exactly-once, against it.
//
//	go run ./test/bench ryw [-rate 2000] [-duration 20s] [-delivery exactly-once]
//
// ryw: read-your-writes wait latency at a write rate (ryw.go).
//
//	go run ./test/bench eos [-rows 200000] [-tx 1000] [-runs 2] [-big 1000000]
//
// eos: CDCSYNC_DELIVERY=exactly-once against at-least-once on the same WAL
// (eos.go).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bench capture|ryw|eos [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "capture":
		err = benchCapture(os.Args[2:])
	case "ryw":
		err = benchRYW(os.Args[2:])
	case "eos":
		err = benchEOS(os.Args[2:])
	default:
		err = fmt.Errorf("unknown benchmark %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func benchCapture(args []string) error {
	fs := flag.NewFlagSet("capture", flag.ExitOnError)
	rows := fs.Int("rows", 200000, "rows to insert")
	perTx := fs.Int("tx", 1000, "rows per transaction")
	extraEnv := fs.String("capture-env", "", "extra environment for the capture process, comma-separated K=V (e.g. GOGC=200)")
	_ = fs.Parse(args)
	if strings.Contains(*extraEnv, "CDCSYNC_DELIVERY=") {
		// The count below is the topic's end offsets: exactly-once topics
		// also hold transaction markers. bench eos measures both modes.
		return fmt.Errorf("bench capture measures at-least-once delivery; use bench eos to compare exactly-once on the same WAL")
	}
	ctx := context.Background()

	bin, pg, kafka, err := startBench(ctx)
	if err != nil {
		return err
	}
	defer pg.Close()
	defer kafka.Close()
	const db = "bench"
	if err := pg.Exec(ctx, db,
		`CREATE PUBLICATION bench FOR TABLE orders`,
		`SELECT pg_create_logical_replication_slot('recvlogical1', 'pgoutput')`,
		`SELECT pg_create_logical_replication_slot('capture', 'pgoutput')`,
		`SELECT pg_create_logical_replication_slot('recvlogical2', 'pgoutput')`,
	); err != nil {
		return err
	}
	fmt.Printf("loading %d rows in transactions of %d...\n", *rows, *perTx)
	for start := 1; start <= *rows; start += *perTx {
		end := min(start+*perTx-1, *rows)
		err := pg.Exec(ctx, db, fmt.Sprintf(
			`INSERT INTO orders (id, item_id, quantity, status) SELECT g, g %% 1000, 1 + g %% 5, 'created' FROM generate_series(%d, %d) g`, start, end))
		if err != nil {
			return err
		}
	}
	conn, err := pgx.Connect(ctx, pg.URL(db))
	if err != nil {
		return err
	}
	var endLSN pglogrepl.LSN
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&endLSN); err != nil {
		return err
	}
	conn.Close(ctx)

	// Baseline: pg_recvlogical drains the same WAL with pgoutput.
	binDir, err := testenv.PostgresBinDir()
	if err != nil {
		return err
	}
	recvlogical := func(slot string) (time.Duration, error) {
		t0 := time.Now()
		recv := exec.Command(filepath.Join(binDir, "pg_recvlogical"), "-d", pg.URL(db), "--slot", slot, "--start",
			"-o", "proto_version=1", "-o", "publication_names=bench", "-f", "/dev/null", "-E", endLSN.String(), "--no-loop")
		if out, err := recv.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("pg_recvlogical: %v: %s", err, out)
		}
		return time.Since(t0), nil
	}
	// The baseline runs before and after capture; the faster run counts,
	// so neither side is favoured by a cold or warm cache.
	recvElapsed, err := recvlogical("recvlogical1")
	if err != nil {
		return err
	}

	// cdcsync capture drains its slot into the broker.
	topic := pipeline.Topic("cdc", "public", "orders")
	if err := kafka.CreateTopic(topic, 4); err != nil {
		return err
	}
	proc := exec.Command(bin, "capture")
	proc.Env = append(os.Environ(),
		"CDCSYNC_SOURCE_URL="+pg.URL(db), "CDCSYNC_SLOT=capture", "CDCSYNC_PUBLICATION=bench",
		"CDCSYNC_SNAPSHOT=never", "CDCSYNC_KAFKA_BROKERS="+strings.Join(kafka.Brokers(), ","),
		"CDCSYNC_HTTP_ADDR=", "CDCSYNC_LOG_LEVEL=warn",
		// at-least-once, as every earlier release ran (older binaries
		// ignore the variable); exactly-once, the default: bench eos.
		"CDCSYNC_DELIVERY=at-least-once")
	if *extraEnv != "" {
		proc.Env = append(proc.Env, strings.Split(*extraEnv, ",")...)
	}
	proc.Stdout, proc.Stderr = os.Stderr, os.Stderr
	t0 := time.Now()
	if err := proc.Start(); err != nil {
		return err
	}
	client, err := sarama.NewClient(kafka.Brokers(), testenv.SaramaConfig())
	if err != nil {
		return err
	}
	defer client.Close()
	var firstRecord time.Duration
	for {
		n, err := countRecords(client, topic)
		if err != nil {
			return err
		}
		if n > 0 && firstRecord == 0 {
			firstRecord = time.Since(t0)
		}
		if n >= int64(*rows) {
			break
		}
		if time.Since(t0) > 10*time.Minute {
			return fmt.Errorf("capture produced only %d of %d rows in 10 minutes", n, *rows)
		}
		time.Sleep(20 * time.Millisecond)
	}
	captureElapsed := time.Since(t0)
	rss, err := testenv.PeakRSS(proc.Process.Pid)
	if err != nil {
		return err
	}
	rssMiB := float64(rss) / (1 << 20)
	_ = proc.Process.Signal(syscall.SIGTERM)
	_ = proc.Wait()

	again, err := recvlogical("recvlogical2")
	if err != nil {
		return err
	}
	recvElapsed = min(recvElapsed, again)

	recvRate := float64(*rows) / recvElapsed.Seconds()
	capRate := float64(*rows) / captureElapsed.Seconds()
	fmt.Printf("rows: %d in %d-row transactions (WAL end %s)\n", *rows, *perTx, endLSN)
	fmt.Printf("pg_recvlogical (pgoutput -> /dev/null, best of 2): %8.0f rows/s  (%v)\n", recvRate, recvElapsed.Round(time.Millisecond))
	fmt.Printf("cdcsync capture (acked by kfake, acks=all):       %8.0f rows/s  (%v)\n", capRate, captureElapsed.Round(time.Millisecond))
	fmt.Printf("capture: first record on Kafka after %v\n", firstRecord.Round(time.Millisecond))
	fmt.Printf("ratio capture / pg_recvlogical: %.2f\n", capRate/recvRate)
	fmt.Printf("capture peak RSS: %.1f MiB\n", rssMiB)
	return nil
}

// startBench builds cdcsync and starts a Postgres cluster with database
// bench holding an empty orders table, and a broker.
func startBench(ctx context.Context) (bin string, pg *testenv.Postgres, kafka *testenv.Kafka, err error) {
	if bin, err = buildCdcsync(); err != nil {
		return "", nil, nil, err
	}
	if pg, err = testenv.StartPostgres(); err != nil {
		return "", nil, nil, err
	}
	if kafka, err = testenv.StartKafka(); err != nil {
		pg.Close()
		return "", nil, nil, err
	}
	err = pg.Exec(ctx, "postgres", "CREATE DATABASE bench")
	if err == nil {
		err = pg.Exec(ctx, "bench",
			`CREATE TABLE orders (id bigint PRIMARY KEY, item_id bigint NOT NULL, quantity bigint NOT NULL, status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`)
	}
	if err != nil {
		pg.Close()
		kafka.Close()
		return "", nil, nil, err
	}
	return bin, pg, kafka, nil
}

func countRecords(client sarama.Client, topic string) (int64, error) {
	parts, err := client.Partitions(topic)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, p := range parts {
		off, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			return 0, err
		}
		n += off
	}
	return n, nil
}

func buildCdcsync() (string, error) {
	dir, err := os.MkdirTemp("", "cdcsync-bench-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "cdcsync")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/cdcsync")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v: %s", err, msg)
	}
	return out, nil
}

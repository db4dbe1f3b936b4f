package soak

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// TestCaptureKeepsKeyOrderAcrossBrokerOutages is the soak's first finding
// (seeds 202 and 303) as a focused test against the processes the soak
// runs: the development broker is killed with SIGKILL three times while
// capture streams writes, for about as long as sarama's retries used to
// last. When a leader lookup failed, sarama failed that message, bumped the
// idempotent epoch and let the partition's later messages through once the
// broker was back, so a change's first copy reached Kafka after newer
// changes of its key (fixed in capture's producer configuration). Every
// committed change must be on Kafka and, per key, first copies must arrive
// in commit order (DESIGN.md guarantee 3; re-sends of earlier changes after
// a failure are allowed). It is about the idempotent producer of
// at-least-once delivery, which it runs; exactly once, the development
// broker is not killed (ForDelivery).
func TestCaptureKeepsKeyOrderAcrossBrokerOutages(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Postgres, the development broker and capture (skipped with -short)")
	}
	ctx := t.Context()
	r := &rig{t: t, absorbed: map[string]float64{}, delivery: deliveryAtLeastOnce}
	pg, err := testenv.StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Close)
	r.orderPG = pg
	r.bin = testenv.BuildCdcsync(t)
	if err := pg.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{orderDB}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, orderDB, ordersDDL); err != nil {
		t.Fatal(err)
	}
	r.brokerAddr, r.brokerDir = freeAddr(t), t.TempDir()
	r.captureAt = freeAddr(t)
	r.startBroker()
	r.startCapture()
	if err := r.waitSlotActive(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}

	const nWriters = 2
	writers := make([]*writer, nWriters)
	errs := make([]error, nWriters)
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range writers {
		// Few items, many changes per order: keys change often.
		writers[i] = newWriter(i, nWriters, r.orderURL(), 20, 300, 7)
		wg.Go(func() { errs[i] = writers[i].run(wctx) })
	}
	// Outages around the retry budget: a shorter one is retried in order,
	// a longer one fails the early messages while later ones, still
	// within their retries, get through when the broker is back.
	for _, down := range []time.Duration{2 * time.Second, 2500 * time.Millisecond, 3 * time.Second} {
		sleep(ctx, 2*time.Second)
		if err := r.broker.Kill(); err != nil {
			t.Fatal(err)
		}
		sleep(ctx, down)
		r.startBroker()
	}
	sleep(ctx, 2*time.Second)
	stop()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	var ledger []Change
	for _, w := range writers {
		ledger = append(ledger, w.ledger...)
	}
	if err := waitConfirmed(ctx, r.orderURL(), time.Minute); err != nil {
		t.Fatalf("%v\n%s", err, r.capture.Tail(3000))
	}
	recs, err := readTopic(ctx, []string{r.brokerAddr})
	if err != nil {
		t.Fatal(err)
	}
	c := checkLedger(ledger, recs)
	t.Logf("%d changes, %d records (%d re-sent)", c.Changes, c.Records, c.Resent)
	if c.Lost != 0 || c.Phantom != 0 || c.OutOfOrder != 0 {
		t.Errorf("lost %d, phantom %d, out of order %d; e.g.\n%q", c.Lost, c.Phantom, c.OutOfOrder, c.Examples)
	}
}

// waitConfirmed waits until capture confirmed the order database's current
// WAL position: everything committed so far is on Kafka.
func waitConfirmed(ctx context.Context, url string, timeout time.Duration) error {
	target, err := walPosition(ctx, url)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		var lsn string
		err := queryRow(ctx, url, `SELECT coalesce(confirmed_flush_lsn::text, '0/0') FROM pg_replication_slots WHERE slot_name = 'cdcsync'`, &lsn)
		if err == nil {
			if confirmed, perr := pglogrepl.ParseLSN(lsn); perr == nil && confirmed >= target {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("capture did not confirm %s within %v (at %s, %v)", target, timeout, lsn, err)
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

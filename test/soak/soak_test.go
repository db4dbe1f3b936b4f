package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/internal/verify"
)

// TestSoak is the chaos soak (see the package comment). Its duration and
// seed come from CDCSYNC_SOAK_DURATION and CDCSYNC_SOAK_SEED.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos soak: starts every service (skipped with -short)")
	}
	set, err := LoadSettings(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("soak seed %d, %v of writes (the same seed replays the same fault sequence: CDCSYNC_SOAK_SEED=%d CDCSYNC_SOAK_DURATION=%v)",
		set.Seed, set.Duration, set.Seed, set.Duration)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("soak FAILED with seed %d: CDCSYNC_SOAK_SEED=%d CDCSYNC_SOAK_DURATION=%v go test ./test/soak -run TestSoak -v",
				set.Seed, set.Seed, set.Duration)
		}
	})
	began := time.Now()
	ctx := t.Context()
	sessionTimeout := sarama.NewConfig().Consumer.Group.Session.Timeout // the sinks keep sarama's default
	// More faults than can fit: the run takes them in order while they do.
	schedule := ForDelivery(NewSchedule(set.Seed, int(set.Duration/time.Second)+8, sessionTimeout), set.Delivery)
	t.Logf("fault sequence of seed %d (each after the pipeline recovered from the previous; as many as fit; pauses outlast the %v consumer session timeout), first two rounds:\n%s",
		set.Seed, sessionTimeout, FormatSchedule(schedule[:14]))

	r := startRig(ctx, t, set.Items, set.Delivery)
	defer r.keepLogs(set.LogDir)
	t.Logf("pipeline up in %v: broker %s, capture, sink-a, sink-b", time.Since(began).Round(100*time.Millisecond), r.brokerAddr)

	sum := &Summary{Seed: set.Seed, Duration: set.Duration, Delivery: set.Delivery, Writers: set.Writers, Items: set.Items, Ops: map[string]int{}}
	tr, stopTracking := startTracker(ctx, r)
	defer stopTracking()

	writesStart := time.Now()
	wr := startWriters(ctx, r, set)
	defer wr.stop()
	writers, writerErrs := wr.writers, wr.errs

	// The same measure as a fault's recovery, without a fault: the
	// pipeline's latency under this load.
	sleepChecking(ctx, r, writesStart.Add(Warmup/2))
	baseline, err := tr.add(ctx, "baseline", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sleepChecking(ctx, r, writesStart.Add(Warmup))

	type pending struct {
		i int
		w *watch
	}
	var watches []pending
	end := writesStart.Add(set.Duration - Tail(set.Duration))
	prev := baseline
	for i, f := range schedule {
		// Each fault starts from a recovered pipeline, so that its
		// recovery is its own; a fault that does not recover within
		// recoveryCap overlaps with the next (and fails the run unless
		// it recovers by the end).
		if !f.Burst {
			if err := settle(ctx, r, tr, prev, recoveryCap); err != nil {
				t.Logf("%v; the next fault overlaps", err)
			}
		}
		if time.Now().Add(f.Gap + f.Down).After(end) {
			t.Logf("%d faults fit in %v of writes", i, set.Duration)
			break
		}
		sleepChecking(ctx, r, time.Now().Add(f.Gap))
		if ctx.Err() != nil {
			break
		}
		start := time.Now()
		w, err := tr.add(ctx, f.Kind(), start)
		if err != nil {
			t.Fatalf("fault %d: %v", i+1, err)
		}
		err = r.inject(ctx, f)
		in := Injected{Fault: f, At: start.Sub(writesStart)}
		if err != nil {
			in.Err = err.Error()
			sum.Fail("fault %d (%s at t+%v): %v", i+1, f.Kind(), in.At.Round(time.Second), err)
		}
		t.Logf("fault %3d at t+%-8v %-7s %-12s for %v%s", i+1, in.At.Round(100*time.Millisecond),
			f.Action, f.Component(), time.Since(start).Round(10*time.Millisecond), errSuffix(err))
		sum.Faults = append(sum.Faults, in)
		watches = append(watches, pending{len(sum.Faults) - 1, w})
		prev = w
	}
	sleepChecking(ctx, r, writesStart.Add(set.Duration))

	wr.stop()
	sum.Writes = time.Since(writesStart)
	for i, err := range writerErrs {
		if err != nil {
			sum.Fail("writer %d: %v", i, err)
		}
	}
	var ledger []Change
	for _, w := range writers {
		ledger = append(ledger, w.ledger...)
		sum.Txns += w.stats.Txns
		sum.Failed += w.stats.Failed
		sum.Unknown += w.stats.Unknown
		sum.Resolved += w.stats.ResolvedIn
		for op, n := range w.stats.Ops {
			sum.Ops[op] += n
		}
		if len(w.stats.Errors) > 0 {
			t.Logf("writer %d: first errors under faults: %q", w.n, w.stats.Errors)
		}
	}
	if err := checkModel(ctx, r.orderURL(), writers); err != nil {
		sum.Fail("the writers' bookkeeping does not match the order database: %v", err)
	}

	// Drain: everything committed is on Kafka and applied by both sinks.
	drain, err := tr.add(ctx, "drain", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.wait(ctx, drain, 3*time.Minute); err != nil {
		sum.Fail("drain: %v", err)
	}
	sum.Drain = drain.took
	r.checkAlive()
	// A fault's question is answered at the latest with the drain's; give
	// the tracker one more sample to see it.
	time.Sleep(500 * time.Millisecond)
	stopTracking()
	if baseline.Done() {
		sum.Baseline = baseline.took
	}
	for _, p := range watches {
		if p.w.Done() {
			sum.Faults[p.i].Recovered, sum.Faults[p.i].Recovery = true, p.w.took
		} else {
			sum.Fail("fault %d (%s) never recovered", p.i+1, sum.Faults[p.i].Kind())
		}
	}
	for i := range r.sinks {
		r.scrapeSink(i)
	}
	sum.Absorbed = r.absorbed
	for _, u := range r.unexpected {
		sum.Fail("unexpected exit: %s", u)
	}

	recs, err := readTopic(ctx, []string{r.brokerAddr})
	if err != nil {
		sum.Fail("read %s: %v", ordersTopic, err)
	}
	sum.Ledger = checkLedger(ledger, recs)
	if sum.Ledger.Changes == 0 {
		sum.Fail("no change was committed: the workload did not run")
	}
	if n := sum.Ledger.Lost + sum.Ledger.Phantom + sum.Ledger.OutOfOrder; n > 0 {
		sum.Fail("Kafka does not match the committed changes: lost %d, phantom %d, out of order %d; e.g. %q",
			sum.Ledger.Lost, sum.Ledger.Phantom, sum.Ledger.OutOfOrder, sum.Ledger.Examples)
	}
	if set.Delivery == deliveryExactlyOnce && sum.Ledger.Resent > 0 {
		sum.Fail("%d re-sent copies read_committed with exactly-once delivery", sum.Ledger.Resent)
	}
	if sum.DLQ, err = topicRecords(r.brokerAddr, dlqTopic); err != nil {
		sum.Fail("read %s: %v", dlqTopic, err)
	} else if sum.DLQ > 0 {
		sum.Fail("%d records in the dead-letter topic: every change of this workload is valid", sum.DLQ)
	}

	sum.Verify, sum.VerifyExit, err = r.verify(ctx)
	if err != nil {
		sum.Fail("cdcsync verify: %v", err)
	} else if sum.VerifyExit != 0 || sum.Verify.Drifted != 0 {
		out, _ := json.MarshalIndent(sum.Verify, "", "  ")
		sum.Fail("cdcsync verify: exit %d, %d drifted:\n%s", sum.VerifyExit, sum.Verify.Drifted, out)
	}
	sum.Total = time.Since(began)
	fmt.Print(sum.Format())
	for _, f := range sum.Failures {
		t.Error(f)
	}
}

// recoveryCap is how long the next fault waits for the previous one's
// recovery.
const recoveryCap = time.Minute

// settle waits until w is answered and then until the pipeline delivered
// what was committed after that (a paused sink that continues, or a
// restarted one, rejoins its group and makes it rebalance again), checking
// the daemons meanwhile.
func settle(ctx context.Context, r *rig, tr *tracker, w *watch, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !w.Done() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not recovered within %v", w.name, timeout)
		}
		sleepChecking(ctx, r, time.Now().Add(100*time.Millisecond))
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	after, err := tr.add(ctx, "settle after "+w.name, time.Now())
	if err != nil {
		return err
	}
	for !after.Done() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not settled within %v", w.name, timeout)
		}
		sleepChecking(ctx, r, time.Now().Add(100*time.Millisecond))
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// sleepChecking waits until deadline, restarting (and recording) any daemon
// that exits by itself meanwhile.
func sleepChecking(ctx context.Context, r *rig, deadline time.Time) {
	for {
		for _, u := range r.checkAlive() {
			r.t.Logf("UNEXPECTED: %s", u)
		}
		d := time.Until(deadline)
		if d <= 0 || ctx.Err() != nil {
			return
		}
		sleep(ctx, min(d, 500*time.Millisecond))
	}
}

func errSuffix(err error) string {
	if err != nil {
		return ": " + err.Error()
	}
	return ""
}

// checkModel compares the order table with the writers' idea of it, which
// the ledger was built from.
func checkModel(ctx context.Context, url string, writers []*writer) error {
	want := map[int64]order{}
	for _, w := range writers {
		for id, o := range w.live {
			want[id] = o
		}
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT id, item_id, quantity, status, rev FROM public.orders`)
	if err != nil {
		return err
	}
	got := map[int64]order{}
	for rows.Next() {
		var id int64
		var o order
		if err := rows.Scan(&id, &o.Item, &o.Qty, &o.Status, &o.Rev); err != nil {
			return err
		}
		got[id] = o
	}
	if err := rows.Err(); err != nil {
		return err
	}
	var diffs []error
	for id, o := range want {
		if g, ok := got[id]; !ok || g != o {
			diffs = append(diffs, fmt.Errorf("order %d: database has %+v (present %v), writer committed %+v", id, g, ok, o))
		}
	}
	for id, g := range got {
		if _, ok := want[id]; !ok {
			diffs = append(diffs, fmt.Errorf("order %d: database has %+v, writer deleted or never committed it", id, g))
		}
	}
	if len(diffs) > 5 {
		diffs = append(diffs[:5], fmt.Errorf("and %d more", len(diffs)-5))
	}
	return errors.Join(diffs...)
}

// topicRecords counts the records of a topic a read_committed consumer
// sees (transaction markers and aborted records take offsets too).
func topicRecords(addr, topic string) (int64, error) {
	client, err := sarama.NewClient([]string{addr}, probeConfig())
	if err != nil {
		return 0, err
	}
	defer client.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, p := range parts {
		if err := testenv.EachCommitted(client, topic, p, func(*sarama.ConsumerMessage) { n++ }); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// verify runs `cdcsync verify --json` as an operator would and returns its
// report and exit status.
func (r *rig) verify(ctx context.Context) (*verify.Report, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, "verify", "--json", "--wait", "1m")
	cmd.Env = append(os.Environ(),
		"CDCSYNC_SOURCE_URL="+r.orderURL(),
		"CDCSYNC_INVENTORY_URL="+r.invPG.URL(inventoryDB),
		"CDCSYNC_REDIS_URL="+r.redis.URL(),
		"CDCSYNC_KAFKA_BROKERS="+r.brokerAddr,
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	if err != nil {
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			return nil, -1, fmt.Errorf("run: %w", err)
		}
		code = exitErr.ExitCode()
	}
	var rep verify.Report
	if jerr := json.Unmarshal(out, &rep); jerr != nil {
		return nil, code, fmt.Errorf("exit %d, no report (%v): %s %s", code, jerr, out, stderr.String())
	}
	return &rep, code, nil
}

package soak

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"testing"
	"time"
)

// burstConverge is how long after the last restart of a burst both stores
// must have applied everything committed before it (issue 14, item 1): a
// restarted sink has to rejoin within the session timeout plus a few
// seconds, whatever the rhythm of the restarts.
const burstConverge = 30 * time.Second

// TestSinkRestartBurst kills sink-a with SIGKILL and starts it again three
// times, 5-7 s apart, under four writers, then kills both sink processes
// together and starts them again: the consumer groups must take the new
// members in although dead ones are still registered, so that both stores
// converge within burstConverge of the last restart, and verify finds them
// exact. Before the fix a restarted sink could sit in a JoinGroup that
// the coordinator held longer than the client's read timeout, retrying
// every 30 s without ever rejoining.
func TestSinkRestartBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("starts every service (skipped with -short)")
	}
	set, err := LoadSettings(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("seed %d (CDCSYNC_SOAK_SEED=%d replays the restart rhythm)", set.Seed, set.Seed)
	ctx := t.Context()
	r := startRig(ctx, t, set.Items, set.Delivery)
	defer r.keepLogs(set.LogDir)

	tr, stopTracking := startTracker(ctx, r)
	defer stopTracking()
	wr := startWriters(ctx, r, set)
	defer wr.stop()

	sleepChecking(ctx, r, time.Now().Add(Warmup))

	rng := rand.New(rand.NewPCG(set.Seed, 0x4275727374)) // "Burst"
	for i := range 3 {
		t.Logf("SIGKILL sink-a and start it again (%d of 3)", i+1)
		r.restartSinks(0)
		sleepChecking(ctx, r, time.Now().Add(5*time.Second+time.Duration(rng.Int64N(int64(2*time.Second)))))
	}
	t.Log("SIGKILL sink-a and sink-b together and start both again")
	r.restartSinks(0, 1)
	last := time.Now()
	after, err := tr.add(ctx, "after the last restart", last)
	if err != nil {
		t.Fatal(err)
	}
	// The writers go on a little after the last restart, so that the
	// rejoined groups apply new changes too; then a drain watch covers
	// everything committed.
	sleepChecking(ctx, r, last.Add(3*time.Second))
	wr.stop()
	for i, err := range wr.errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	drain, err := tr.add(ctx, "drain", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []*watch{after, drain} {
		if err := tr.wait(ctx, w, time.Until(last.Add(burstConverge))); err != nil {
			t.Fatalf("not converged within %v of the last restart: %v", burstConverge, err)
		}
		t.Logf("%s: caught up %v after the last restart", w.name, (w.took + w.start.Sub(last)).Round(100*time.Millisecond))
	}
	for _, u := range r.unexpected {
		t.Errorf("unexpected exit: %s", u)
	}
	if err := checkModel(ctx, r.orderURL(), wr.writers); err != nil {
		t.Fatalf("the writers' bookkeeping does not match the order database: %v", err)
	}
	rep, code, err := r.verify(ctx)
	if err != nil {
		t.Fatalf("cdcsync verify: %v", err)
	}
	if code != 0 || rep.Drifted != 0 {
		out, _ := json.MarshalIndent(rep, "", "  ")
		t.Fatalf("cdcsync verify: exit %d, %d drifted:\n%s", code, rep.Drifted, out)
	}
}

// restartSinks kills the given sink processes with SIGKILL, together, and
// starts them again at once.
func (r *rig) restartSinks(instances ...int) {
	r.t.Helper()
	for _, i := range instances {
		r.scrapeSink(i)
		_ = r.sinks[i].Kill()
	}
	for _, i := range instances {
		r.startSink(i)
	}
}

package exactlyonce

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// TestExactlyOnceUnderCrashes (issue 12): four writers run
// multi-statement transactions on two tables (inserts, updates, deletes,
// an outbox event with every order inserted, one in ten rolled back, and
// one transaction of 20,000 rows) while capture is SIGKILLed three times
// (once while the large transaction streams) and restarted each time, and
// the broker is stopped and started once. A concurrent read_committed
// reader samples consistent cuts of all partitions throughout. At the end
// a read_committed read of the table topics and the events topic must
// hold each committed change and event exactly once (by position), none
// that was rolled back, the latest record per key equal to the row, and
// no sample may have seen part of a Postgres transaction.
//
// make exactly-once-soak runs it for five minutes with twelve kills and
// three broker restarts.
func TestExactlyOnceUnderCrashes(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	kafka := ownKafka(t) // restarted below
	s := newSetup(t, e.PG, kafka)
	duration, kills, restarts := 24*time.Second, 3, 1
	if soak() {
		duration, kills, restarts = 5*time.Minute, 12, 3
	}
	proc := s.capture()
	s.waitStreaming(0)
	ld := startLoad(t, s, duration/5)
	started := ld.started

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 12))
	// Events spread over the run; the second kill waits for the large
	// transaction and hits capture while it streams it.
	events := kills + restarts
	step := duration / time.Duration(events+1)
	restartAt := map[int]bool{}
	for len(restartAt) < restarts {
		if i := 1 + rng.IntN(events-1); i != 1 {
			restartAt[i] = true
		}
	}
	killed := 0
	for i := range events {
		time.Sleep(time.Until(started.Add(step*time.Duration(i+1) + time.Duration(rng.IntN(500))*time.Millisecond)))
		if restartAt[i] {
			kafka.Stop()
			time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
			if err := kafka.Start(); err != nil {
				t.Fatal(err)
			}
			t.Logf("%v: broker stopped and started again", time.Since(started).Round(100*time.Millisecond))
			continue
		}
		killed++
		if killed == 2 {
			ld.waitBig(t, duration)
			time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		}
		if proc.Exited() {
			t.Fatalf("%s exited:\n%s", proc.Name, proc.Tail(3000))
		}
		pid, _ := s.slotState()
		if err := proc.Kill(); err != nil {
			t.Fatal(err)
		}
		t.Logf("%v: capture SIGKILLed (kill %d)", time.Since(started).Round(100*time.Millisecond), killed)
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		proc = s.capture()
		s.waitStreaming(pid)
	}
	time.Sleep(time.Until(started.Add(duration)))
	ld.finish(s, 3*time.Minute)
	stop(t, proc)
	ld.check(s, fmt.Sprintf("%d kills, %d broker restarts", kills, restarts))
}

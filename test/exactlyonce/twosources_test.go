package exactlyonce

import (
	"strings"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// TestTwoSourcesWithTheSameSlotNameShareABroker: two order databases on
// two Postgres servers, each with its own capture, topic prefix and a slot
// of the same name (the default slot is "cdcsync" everywhere), write into
// one Kafka cluster.
// Their transactional producers must not fence each other: both run
// without restarts and both end exact.
func TestTwoSourcesWithTheSameSlotNameShareABroker(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	other, err := testenv.StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	a := newSetup(t, e.PG, e.Kafka)
	b := newSetup(t, other, e.Kafka)
	b.slot = a.slot
	for i, v := range b.env {
		if strings.HasPrefix(v, "CDCSYNC_SLOT=") {
			b.env[i] = "CDCSYNC_SLOT=" + a.slot
		}
	}
	procA, procB := a.capture(), b.capture()
	a.waitStreaming(0)
	b.waitStreaming(0)
	loadA, loadB := startLoad(t, a, time.Hour), startLoad(t, b, time.Hour)
	time.Sleep(8 * time.Second)
	loadA.finish(a, time.Minute)
	loadB.finish(b, time.Minute)
	for _, p := range []*testenv.Process{procA, procB} {
		if n := strings.Count(p.Output(), "capture session ended"); n > 0 {
			t.Errorf("%s: %d sessions ended while both ran, e.g.:\n%s", p.Name, n, firstLine(p.Output(), "capture session ended"))
		}
	}
	stop(t, procA)
	stop(t, procB)
	loadA.check(a, "source A")
	loadB.check(b, "source B, same slot name")
}

// firstLine returns the first line of out containing s.
func firstLine(out, s string) string {
	for line := range strings.Lines(out) {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}

package soak

import (
	"strings"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/internal/verify"
)

func TestSummaryFormat(t *testing.T) {
	s := &Summary{
		Seed: 99, Duration: 90 * time.Second, Writes: 90 * time.Second, Total: 2 * time.Minute, Drain: time.Second,
		Writers: 4, Items: 200, Txns: 10, Ops: map[string]int{opCreate: 5, opPay: 3},
		Ledger:   LedgerCheck{Changes: 8, OnKafka: 8, Records: 9, Resent: 1},
		Absorbed: map[string]float64{"inventory": 3, "redis": 4},
		Faults: []Injected{
			{Fault: Fault{Target: TargetBroker, Action: ActionKill}, Recovered: true, Recovery: 3 * time.Second},
			{Fault: Fault{Target: TargetBroker, Action: ActionKill}, Recovered: true, Recovery: time.Second},
			{Fault: Fault{Target: TargetSink, Action: ActionPause, Instance: 1}, Recovered: true, Recovery: 12 * time.Second},
		},
		Verify: &verify.Report{Checks: []verify.Check{{Name: "inventory_items", Compared: 200}}},
	}
	out := s.Format()
	for _, want := range []string{
		"CDCSYNC_SOAK_SEED=99 CDCSYNC_SOAK_DURATION=1m30s",
		"8 of 8 committed changes on Kafka: lost 0",
		"faults injected      3: pause sink 1, kill broker 2",
		"p50 3s, max 12s over 3 faults (0 not recovered)",
		"kill broker          n=2   p50 1s      max 3s",
		"inventory 3, redis 4",
		"drift                0 (cdcsync verify exit 0; drifted/compared: inventory_items 0/200)",
		"result               PASS",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	s.Fail("lost %d changes", 2)
	if out := s.Format(); s.Passed() || !strings.Contains(out, "FAIL (seed 99)") || !strings.Contains(out, "- lost 2 changes") {
		t.Errorf("failed summary:\n%s", out)
	}
}

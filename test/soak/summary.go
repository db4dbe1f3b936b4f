package soak

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cdcsync/cdcsync/internal/verify"
)

// Injected is a fault as it was carried out.
type Injected struct {
	Fault
	At        time.Duration // since the writers started, when it was injected
	Recovery  time.Duration // see watch; valid when Recovered
	Recovered bool
	Err       string // what went wrong carrying it out (a finding)
}

// Summary is everything a soak run reports.
type Summary struct {
	Seed     uint64
	Duration time.Duration // CDCSYNC_SOAK_DURATION
	Delivery string        // capture's CDCSYNC_DELIVERY (CDCSYNC_SOAK_DELIVERY)
	Writes   time.Duration // how long the writers ran
	Total    time.Duration // setup, writes, drain and checks
	Drain    time.Duration // from stopping the writers until caught up
	Writers  int
	Items    int
	Txns     int
	Ops      map[string]int
	Failed   int // transactions that returned an error
	Unknown  int // of which COMMIT's answer was lost
	Resolved int // failed transactions found committed by reading back
	Ledger   LedgerCheck
	Faults   []Injected
	Baseline time.Duration // the recovery measure without a fault, during warm-up
	Absorbed map[string]float64
	DLQ      int64
	Verify   *verify.Report
	// VerifyExit is `cdcsync verify`'s exit status.
	VerifyExit int
	Failures   []string
}

// Passed reports whether the run proved the guarantees.
func (s *Summary) Passed() bool { return len(s.Failures) == 0 }

// Fail records why the run failed.
func (s *Summary) Fail(format string, args ...any) {
	s.Failures = append(s.Failures, fmt.Sprintf(format, args...))
}

// kindStats are recovery times of one fault kind.
type kindStats struct {
	kind  string
	count int
	times []time.Duration // of the recovered ones
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i]
}

// Format renders the one summary block.
func (s *Summary) Format() string {
	var b strings.Builder
	line := func(label, format string, args ...any) {
		fmt.Fprintf(&b, "%-20s %s\n", label, fmt.Sprintf(format, args...))
	}
	b.WriteString("=== cdcsync chaos soak ===\n")
	line("seed", "%d  (same fault sequence: CDCSYNC_SOAK_SEED=%d CDCSYNC_SOAK_DURATION=%v)", s.Seed, s.Seed, s.Duration)
	line("duration", "%v of writes; %v in all (setup, writes, drain %v, checks)", s.Writes.Round(time.Second), s.Total.Round(time.Second), s.Drain.Round(100*time.Millisecond))
	created := s.Ops[opCreate]
	line("orders written", "%d orders created by %d writers over %d items; %d committed changes in %d transactions",
		created, s.Writers, s.Items, s.Ledger.Changes, s.Txns)
	line("", "(%s)", opsLine(s.Ops))
	line("", "%d transactions failed under faults, %d of them at COMMIT (outcome unknown); read back: %d had committed",
		s.Failed, s.Unknown, s.Resolved)
	line("changes captured", "%d of %d committed changes on Kafka: lost %d, phantom %d, out of order %d",
		s.Ledger.OnKafka, s.Ledger.Changes, s.Ledger.Lost, s.Ledger.Phantom, s.Ledger.OutOfOrder)
	line("", "%d records read_committed: %d re-sent duplicates, %d tombstones; capture %s", s.Ledger.Records, s.Ledger.Resent, s.Ledger.Tombstones, cmp.Or(s.Delivery, deliveryExactlyOnce))
	line("faults injected", "%d: %s", len(s.Faults), s.faultCounts())
	var all []time.Duration
	unrecovered := 0
	for _, f := range s.Faults {
		if f.Recovered {
			all = append(all, f.Recovery)
		} else {
			unrecovered++
		}
	}
	line("recovery", "p50 %v, max %v over %d faults (%d not recovered); no-fault baseline %v",
		round(percentile(all, 0.5)), round(slices.Max(append([]time.Duration{0}, all...))), len(all), unrecovered, round(s.Baseline))
	if n, in, after := s.bursts(); n > 0 {
		line("bursts", "%d (%d faults, each injected without waiting for recovery from the one before); after a burst's last fault: p50 %v, max %v",
			n, in, round(percentile(after, 0.5)), round(slices.Max(append([]time.Duration{0}, after...))))
	}
	for _, k := range s.byKind() {
		line("", "  %-20s n=%-3d p50 %-7v max %v", k.kind, k.count, round(percentile(k.times, 0.5)), round(slices.Max(append([]time.Duration{0}, k.times...))))
	}
	line("", "(from injection until every change committed before it is on Kafka and both sink groups committed past it)")
	line("duplicates absorbed", "inventory %.0f, redis %.0f (events the sinks skipped as already applied)", s.Absorbed["inventory"], s.Absorbed["redis"])
	line("DLQ", "%d records in %s", s.DLQ, dlqTopic)
	if s.Verify != nil {
		var checks []string
		for _, c := range s.Verify.Checks {
			checks = append(checks, fmt.Sprintf("%s %d/%d", c.Name, c.Drifted, c.Compared))
		}
		line("drift", "%d (cdcsync verify exit %d; drifted/compared: %s)", s.Verify.Drifted, s.VerifyExit, strings.Join(checks, ", "))
	} else {
		line("drift", "unknown (cdcsync verify exit %d)", s.VerifyExit)
	}
	line("broker", "cdcsync dev-broker: kfake, a development stand-in for Kafka (one broker, on-disk data dir, no replication)")
	if s.Passed() {
		line("result", "PASS")
	} else {
		line("result", "FAIL (seed %d)", s.Seed)
		for _, f := range s.Failures {
			line("", "- %s", f)
		}
	}
	return b.String()
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }

func opsLine(ops map[string]int) string {
	var parts []string
	for _, op := range []string{opCreate, opPay, opShip, opCancel, opChange, opDelete} {
		parts = append(parts, fmt.Sprintf("%s %d", op, ops[op]))
	}
	return strings.Join(parts, ", ")
}

func (s *Summary) faultCounts() string {
	var parts []string
	for _, k := range s.byKind() {
		parts = append(parts, fmt.Sprintf("%s %d", k.kind, k.count))
	}
	return strings.Join(parts, ", ")
}

// byKind groups the faults by kind in target order, kills first.
func (s *Summary) byKind() []kindStats {
	var out []kindStats
	for _, tg := range Targets() {
		for _, a := range []Action{ActionKill, ActionRestart, ActionPause} {
			k := kindStats{kind: string(a) + " " + string(tg)}
			n := 0
			for _, f := range s.Faults {
				if f.Target == tg && f.Action == a {
					n++
					if f.Recovered {
						k.times = append(k.times, f.Recovery)
					}
				}
			}
			if n > 0 {
				k.count = n
				out = append(out, k)
			}
		}
	}
	return out
}

// bursts counts the runs of faults injected without waiting for recovery
// (a fault and the burst faults that follow it) and the faults in them,
// with each run's recovery after its last fault.
func (s *Summary) bursts() (n, faults int, after []time.Duration) {
	for i := 0; i < len(s.Faults); i++ {
		j := i
		for j+1 < len(s.Faults) && s.Faults[j+1].Burst {
			j++
		}
		if j > i {
			n++
			faults += j - i + 1
			if last := s.Faults[j]; last.Recovered {
				after = append(after, last.Recovery)
			}
		}
		i = j
	}
	return n, faults, after
}

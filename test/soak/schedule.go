package soak

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Target is a component the soak injects faults into. Each is its own OS
// process (or process group, for Postgres).
type Target string

const (
	TargetCapture     Target = "capture"      // cdcsync capture
	TargetSink        Target = "sink"         // one of the two cdcsync sink processes
	TargetOrderDB     Target = "order-db"     // the order database's Postgres cluster
	TargetInventoryDB Target = "inventory-db" // the inventory store's Postgres cluster
	TargetRedis       Target = "redis"        // redis-server
	TargetBroker      Target = "broker"       // cdcsync dev-broker (kfake, on-disk data dir)
)

// Targets lists every target in the order summaries and rounds use.
func Targets() []Target {
	return []Target{TargetCapture, TargetSink, TargetOrderDB, TargetInventoryDB, TargetRedis, TargetBroker}
}

// Action is what a fault does to its target.
type Action string

const (
	// ActionKill sends SIGKILL (to the whole process group) and starts the
	// component again after the fault's downtime: a crash.
	ActionKill Action = "kill"
	// ActionRestart stops the component cleanly (SIGTERM; Postgres fast
	// shutdown) and starts it again after the downtime: a deploy.
	ActionRestart Action = "restart"
	// ActionPause sends SIGSTOP and SIGCONT after the downtime, which is
	// longer than the consumer session timeout: a stall (GC pause, frozen
	// VM) after which the group has moved on without the process.
	ActionPause Action = "pause"
)

// sinkInstances is how many sink processes run (same consumer groups), so
// that a paused or killed sink's partitions move to the other.
const sinkInstances = 2

// Fault is one planned fault.
type Fault struct {
	// Gap is the wait before the fault, counted from the moment the
	// pipeline recovered from the previous one (from the end of the
	// warm-up for the first), so each recovery is measured on its own.
	Gap      time.Duration
	Target   Target
	Action   Action
	Instance int           // which sink process (0 or 1); 0 for the others
	Down     time.Duration // from the stop (or SIGSTOP) to the start (or SIGCONT)
	// Burst: the fault follows the previous one after Gap without waiting
	// for the pipeline to recover from it (several faults in a row).
	Burst bool
}

// Kind names the fault's action and target, e.g. "kill broker".
func (f Fault) Kind() string { return string(f.Action) + " " + string(f.Target) }

// Component names the process the fault hits, e.g. "sink-b".
func (f Fault) Component() string {
	if f.Target == TargetSink {
		return fmt.Sprintf("sink-%c", 'a'+f.Instance)
	}
	return string(f.Target)
}

func (f Fault) String() string {
	burst := ""
	if f.Burst {
		burst = "  (burst: no wait for recovery)"
	}
	return fmt.Sprintf("after %-6v %-7s %-12s for %v%s", f.Gap.Round(100*time.Millisecond), f.Action, f.Component(), f.Down.Round(10*time.Millisecond), burst)
}

// Schedule timing.
const (
	// Warmup is how long the writers run before the first fault.
	Warmup     = 5 * time.Second
	gapMin     = 1 * time.Second
	gapSpread  = 3 * time.Second
	downMin    = 200 * time.Millisecond
	downSpread = 2 * time.Second
	// A pause lasts the session timeout plus pauseOver..+pauseSpread.
	pauseOver   = 1 * time.Second
	pauseSpread = 3 * time.Second
	// A fault joins a burst one time in burstOdds; it then comes
	// burstGapMin..+burstGapSpread after the previous one ended.
	burstOdds      = 3
	burstGapMin    = 200 * time.Millisecond
	burstGapSpread = 800 * time.Millisecond
)

// Tail is the quiet time at the end of a run of the writers lasting d: no
// fault starts unless its component is back this long before the writers
// stop, so the last recovery also happens under load.
func Tail(d time.Duration) time.Duration {
	return min(max(d/10, 8*time.Second), 30*time.Second)
}

// NewSchedule draws the first n faults of seed's fault sequence: the same
// seed gives the same sequence. Faults come in rounds; each round is a
// shuffle of one fault per target (a kill or, one time in three, a clean
// restart) and one pause of a sink, so a run long enough for one round
// (about 70 s) hits every component. sessionTimeout is the sinks'
// consumer group session timeout, which a pause outlasts. One fault in
// burstOdds (after a round's first) is a burst fault: it follows the
// previous one within a second, without waiting for recovery, so that
// faults also pile up (issue 14: rapid restarts). Bursts are drawn from a
// second generator, so a seed's faults stay what they were before bursts.
func NewSchedule(seed uint64, n int, sessionTimeout time.Duration) []Fault {
	rng := rand.New(rand.NewPCG(seed, 0x536f616b))    // "Soak"
	brng := rand.New(rand.NewPCG(seed, 0x4275727374)) // "Burst"
	span := func(lo, spread time.Duration) time.Duration {
		return lo + time.Duration(rng.Int64N(int64(spread)))
	}
	faults := make([]Fault, 0, n)
	for len(faults) < n {
		var round []Fault
		for _, tg := range Targets() {
			f := Fault{Target: tg, Action: ActionKill}
			if rng.IntN(3) == 0 {
				f.Action = ActionRestart
			}
			round = append(round, f)
		}
		round = append(round, Fault{Target: TargetSink, Action: ActionPause})
		rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		for _, f := range round {
			if f.Target == TargetSink {
				f.Instance = rng.IntN(sinkInstances)
			}
			if f.Action == ActionPause {
				f.Down = sessionTimeout + span(pauseOver, pauseSpread)
			} else {
				f.Down = span(downMin, downSpread)
			}
			f.Gap = span(gapMin, gapSpread)
			if len(faults) > 0 && brng.IntN(burstOdds) == 0 {
				f.Burst = true
				f.Gap = burstGapMin + time.Duration(brng.Int64N(int64(burstGapSpread)))
			}
			faults = append(faults, f)
		}
	}
	return faults[:n]
}

// ForDelivery adapts a schedule to capture's delivery mode: exactly once,
// a broker kill becomes a clean restart, for the development broker's sake.
// kfake recovers from a SIGKILL by aborting the Kafka transactions it finds
// open without writing their abort markers, so a read_committed consumer
// (the sinks) that fetches from inside such a transaction skips the
// producer's later, committed records in that fetch, and capture's producer
// is refused until its retries run out (INVALID_TXN_STATE, retried as a
// connection error). Kafka writes the markers; at least once the soak
// still kills the broker.
func ForDelivery(faults []Fault, delivery string) []Fault {
	if delivery != deliveryExactlyOnce {
		return faults
	}
	out := slices.Clone(faults)
	for i, f := range out {
		if f.Target == TargetBroker && f.Action == ActionKill {
			out[i].Action = ActionRestart
		}
	}
	return out
}

// FormatSchedule lists a schedule one fault per line.
func FormatSchedule(faults []Fault) string {
	var b strings.Builder
	for i, f := range faults {
		fmt.Fprintf(&b, "%3d  %s\n", i+1, f)
	}
	return b.String()
}

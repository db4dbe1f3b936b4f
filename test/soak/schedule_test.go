package soak

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestScheduleIsReproducibleFromTheSeed(t *testing.T) {
	a := NewSchedule(42, 30, 10*time.Second)
	b := NewSchedule(42, 30, 10*time.Second)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different schedules:\n%s\n%s", FormatSchedule(a), FormatSchedule(b))
	}
	if c := NewSchedule(43, 30, 10*time.Second); reflect.DeepEqual(a, c) {
		t.Fatal("seeds 42 and 43 drew the same schedule")
	}
	// A longer sequence starts with the shorter one: a longer run of the
	// same seed replays the same faults first.
	if long := NewSchedule(42, 60, 10*time.Second); !reflect.DeepEqual(long[:30], a) {
		t.Fatal("the first 30 faults of a 60-fault sequence differ from a 30-fault one")
	}
}

func TestScheduleRoundsHitEveryComponent(t *testing.T) {
	const round = 7 // one fault per target and one pause
	for seed := range uint64(200) {
		faults := NewSchedule(seed, 3*round, 10*time.Second)
		for r := range 3 {
			kinds := map[Target]int{}
			pauses := 0
			for _, f := range faults[r*round : (r+1)*round] {
				if f.Action == ActionPause {
					pauses++
					if f.Target != TargetSink || f.Down <= 10*time.Second {
						t.Fatalf("seed %d: pause %v must hit a sink for longer than the session timeout", seed, f)
					}
					continue
				}
				kinds[f.Target]++
				if f.Down < downMin || f.Down >= downMin+downSpread {
					t.Fatalf("seed %d: downtime out of range: %v", seed, f)
				}
				if f.Action != ActionKill && f.Action != ActionRestart {
					t.Fatalf("seed %d: unexpected action: %v", seed, f)
				}
			}
			if pauses != 1 || len(kinds) != len(Targets()) {
				t.Fatalf("seed %d round %d: %d pauses, targets %v", seed, r, pauses, kinds)
			}
		}
		for _, f := range faults {
			if f.Burst {
				if f.Gap < burstGapMin || f.Gap >= burstGapMin+burstGapSpread {
					t.Fatalf("seed %d: burst gap out of range: %v", seed, f)
				}
			} else if f.Gap < gapMin || f.Gap >= gapMin+gapSpread {
				t.Fatalf("seed %d: gap out of range: %v", seed, f)
			}
			if f.Instance < 0 || f.Instance >= sinkInstances || (f.Target != TargetSink && f.Instance != 0) {
				t.Fatalf("seed %d: bad instance: %+v", seed, f)
			}
		}
	}
}

func TestScheduleHasBursts(t *testing.T) {
	faults := NewSchedule(7, 3000, 10*time.Second)
	bursts, longest, run := 0, 0, 0
	for _, f := range faults {
		if f.Burst {
			bursts++
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	// One fault in three follows the previous one without waiting.
	if bursts < 900 || bursts > 1100 || longest < 3 || faults[0].Burst {
		t.Fatalf("%d burst faults of 3000, longest run %d, first %v", bursts, longest, faults[0])
	}
	// Bursts leave the faults themselves as they were without them.
	plain := NewSchedule(7, 3000, 10*time.Second)
	for i := range plain {
		plain[i].Burst, plain[i].Gap = false, 0
		f := faults[i]
		f.Burst, f.Gap = false, 0
		if f != plain[i] {
			t.Fatalf("fault %d differs: %v vs %v", i, f, plain[i])
		}
	}
}

func TestScheduleMixesKillsAndRestarts(t *testing.T) {
	n := map[Action]int{}
	for _, f := range NewSchedule(1, 7000, 10*time.Second) {
		n[f.Action]++
	}
	// 6 of 7 faults are kills or restarts, one in three of those restarts.
	if n[ActionPause] != 1000 || n[ActionRestart] < 1800 || n[ActionRestart] > 2200 || n[ActionKill] < 3800 {
		t.Fatalf("action mix: %v", n)
	}
}

func TestTail(t *testing.T) {
	for d, want := range map[time.Duration]time.Duration{
		20 * time.Second: 8 * time.Second, 90 * time.Second: 9 * time.Second,
		100 * time.Second: 10 * time.Second, 30 * time.Minute: 30 * time.Second,
	} {
		if got := Tail(d); got != want {
			t.Errorf("Tail(%v) = %v, want %v", d, got, want)
		}
	}
}

// Exactly once the development broker is restarted, never killed (see
// ForDelivery); the rest of the seed's sequence stays as it is.
func TestScheduleForDelivery(t *testing.T) {
	all := NewSchedule(7, 200, 10*time.Second)
	if got := ForDelivery(all, deliveryAtLeastOnce); !slices.Equal(got, all) {
		t.Error("at least once the schedule changed")
	}
	eos := ForDelivery(all, deliveryExactlyOnce)
	kills := 0
	for i, f := range all {
		g := eos[i]
		if f.Target == TargetBroker && f.Action == ActionKill {
			kills++
			f.Action = ActionRestart
		}
		if g != f {
			t.Fatalf("fault %d: %v exactly once, want %v", i, g, f)
		}
	}
	if kills == 0 {
		t.Fatal("the schedule has no broker kill: the test proves nothing")
	}
	if all[0] != NewSchedule(7, 1, 10*time.Second)[0] {
		t.Error("ForDelivery changed the schedule it was given")
	}
}

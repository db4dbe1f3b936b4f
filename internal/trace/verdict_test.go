package trace

import "testing"

// After a failover the new primary writes below the LSNs the inventory
// sink applied from the old one: an item that differs is in flight until
// the sink reaches the source's epoch, and drift once it has.
func TestItemVerdictComparesSourceEpochs(t *testing.T) {
	report := func(applied string) *Report {
		return &Report{
			SourceLSN: "1795600000@0/3000100",
			Item:      &Item{ItemID: 7, Exists: true, Reserved: 3, ExpectedReserved: 5},
			Applied:   []Applied{{Sink: "inventory", Store: "inventory store", LSN: applied}},
		}
	}
	if v := decide(report("0/7000000")); v.State != InFlight {
		t.Errorf("applied 0/7000000 of the old epoch, source at 1795600000@0/3000100: %s (%v), want in flight", v.State, v)
	}
	if v := decide(report("1795600000@0/3000100")); v.State != Drift {
		t.Errorf("applied the source's position: %s (%v), want drift", v.State, v)
	}
}

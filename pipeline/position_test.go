package pipeline

import "testing"

func TestPositionRoundTripAndOrder(t *testing.T) {
	p := Position{Commit: 0x16B3748, Change: 0x16B3700}
	got, err := ParsePosition(p.String())
	if err != nil {
		t.Fatal(err)
	}
	if got != p {
		t.Fatalf("round trip: got %v want %v", got, p)
	}
	var scanned Position
	if err := scanned.Scan([]byte(p.String())); err != nil || scanned != p {
		t.Fatalf("scan: %v %v", scanned, err)
	}
	cases := []struct {
		a, b Position
		less bool
	}{
		{Position{0, 1, 5}, Position{0, 2, 0}, true},
		{Position{0, 2, 0}, Position{0, 1, 5}, false},
		{Position{0, 2, 1}, Position{0, 2, 3}, true},
		{Position{0, 2, 3}, Position{0, 2, 3}, false},
		// A later source epoch is newer whatever its LSNs (a promoted
		// standby or a restored cluster writing below the old LSNs).
		{Position{0, 9, 9}, Position{1, 1, 1}, true},
		{Position{1, 1, 1}, Position{0, 9, 9}, false},
		{Position{1, 9, 9}, Position{2, 1, 1}, true},
	}
	for _, c := range cases {
		if c.a.Less(c.b) != c.less {
			t.Errorf("%v.Less(%v) = %v", c.a, c.b, !c.less)
		}
	}
	for _, bad := range []string{"", "0/1", "x:0/1", "0/1:zz", "x@0/1:0/2", "4294967296@0/1:0/2"} {
		if _, err := ParsePosition(bad); err == nil {
			t.Errorf("ParsePosition(%q) succeeded", bad)
		}
	}
}

// Positions in a source epoch above 0 carry it as a prefix; without one a
// position is in epoch 0 (records written before epochs existed).
func TestPositionEpochText(t *testing.T) {
	p := Position{Epoch: 1795600000, Commit: 0x16B3748, Change: 0x16B3700}
	if got, want := p.String(), "1795600000@0/16B3748:0/16B3700"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	got, err := ParsePosition(p.String())
	if err != nil || got != p {
		t.Fatalf("round trip: %v %v", got, err)
	}
	if e := PositionEpoch(p.String()); e != p.Epoch {
		t.Fatalf("PositionEpoch = %d", e)
	}
	if e := PositionEpoch("0/16B3748:0/16B3700"); e != 0 {
		t.Fatalf("PositionEpoch without a prefix = %d", e)
	}
}

func TestPositionTextMatchesPostgres(t *testing.T) {
	for _, p := range []Position{{}, {Commit: 0x16B3748, Change: 0x16B3700}, {Commit: 0xABCDEF0123456789, Change: 0x1}} {
		want := p.Commit.String() + ":" + p.Change.String()
		if got := p.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
		if got := string(p.AppendText([]byte("abc"))); got != "abc"+want {
			t.Errorf("AppendText = %q", got)
		}
	}
}

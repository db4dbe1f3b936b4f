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
		{Position{1, 5}, Position{2, 0}, true},
		{Position{2, 0}, Position{1, 5}, false},
		{Position{2, 1}, Position{2, 3}, true},
		{Position{2, 3}, Position{2, 3}, false},
	}
	for _, c := range cases {
		if c.a.Less(c.b) != c.less {
			t.Errorf("%v.Less(%v) = %v", c.a, c.b, !c.less)
		}
	}
	for _, bad := range []string{"", "0/1", "x:0/1", "0/1:zz"} {
		if _, err := ParsePosition(bad); err == nil {
			t.Errorf("ParsePosition(%q) succeeded", bad)
		}
	}
}

func TestPositionTextMatchesPostgres(t *testing.T) {
	for _, p := range []Position{{}, {0x16B3748, 0x16B3700}, {0xABCDEF0123456789, 0x1}} {
		want := p.Commit.String() + ":" + p.Change.String()
		if got := p.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
		if got := string(p.AppendText([]byte("abc"))); got != "abc"+want {
			t.Errorf("AppendText = %q", got)
		}
	}
}

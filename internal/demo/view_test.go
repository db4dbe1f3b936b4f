package demo

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func testFrame() frame {
	return frame{
		elapsed: 12*time.Second + 300*time.Millisecond,
		cur: sample{writes: 2412, creates: 845, events: 840, captured: 2400, slotLag: 1536, sinks: map[string]sinkSample{
			"inventory": {processed: 2390, lag: 12},
			"redis":     {processed: 2400, lag: 0},
		}},
		rate:  rates{writes: 200.4, events: 70, captured: 199.6, sinks: map[string]float64{"inventory": 198, "redis": 201}, e2e: map[string]time.Duration{"redis": 21 * time.Millisecond}},
		drift: driftState{checked: true, drifted: 3, at: time.Now(), took: 61 * time.Millisecond},
	}
}

func TestViewRedrawsInPlaceOnATerminal(t *testing.T) {
	var buf bytes.Buffer
	v := &view{w: &buf, terminal: true}
	f := testFrame()
	v.draw(f)
	first := buf.String()
	lines := strings.Split(strings.TrimSuffix(first, "\n"), "\n")
	if !strings.HasPrefix(first, "\r\x1b[2K") {
		t.Errorf("the first frame should start with a cleared line, not move up: %q", first[:min(len(first), 20)])
	}
	for _, want := range []string{
		"cdcsync demo, running 12s",
		"orders written            200          2,412  order transactions",
		"OrderCreated               70            840  outbox events on cdc.events.order (845 published)",
		"captured                  200          2,400  row changes Postgres → Kafka, slot lag 1.5 KiB",
		"sink inventory            198          2,390  consumer lag 12 records",
		"sink redis                201          2,400  consumer lag 0 records, commit to applied 21ms",
		"drift: 3 items or keys differ (checked 0s ago in 61ms",
		"warnings: 0",
	} {
		if !strings.Contains(first, want) {
			t.Errorf("frame lacks %q:\n%s", want, first)
		}
	}
	buf.Reset()
	f.warnings, f.lastWarning = 2, "redis apply failed: connection refused"
	v.draw(f)
	second := buf.String()
	up := "\x1b[" + itoa(len(lines)) + "A"
	if !strings.HasPrefix(second, up) {
		t.Errorf("second frame does not move up %d lines: %q", len(lines), second[:min(len(second), 20)])
	}
	if strings.Count(second, "\r\x1b[2K") != len(lines) || !strings.Contains(second, "warnings: 2 (last: redis apply failed: connection refused)") {
		t.Errorf("second frame: %q", second)
	}
}

func TestViewPrintsLinesElsewhere(t *testing.T) {
	var buf bytes.Buffer
	v := &view{w: &buf, lineEvery: time.Hour}
	f := testFrame()
	f.elapsed = 0
	v.draw(f) // the first frame always prints
	f.elapsed = 5 * time.Second
	v.draw(f) // within lineEvery: not printed
	want := "demo 0s: orders 200/s (2412), OrderCreated events 840, captured 200/s, slot lag 1.5 KiB, inventory 198/s lag 12, redis 201/s lag 0, drift 3 (in flight included)\n"
	if buf.String() != want || strings.Contains(buf.String(), "\x1b") {
		t.Errorf("got  %q\nwant %q", buf.String(), want)
	}
}

func TestDriftDescriptions(t *testing.T) {
	if s := (driftState{}).describe(); s != "first check pending" {
		t.Error(s)
	}
	if s := (driftState{checked: true, err: errors.New("connection refused")}).describe(); s != "check failed: connection refused" {
		t.Error(s)
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -4200: "-4,200"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
	if got := truncate("ääää\nbbbb", 5); got != "ääää…" {
		t.Errorf("truncate: %q", got)
	}
}

func TestRateBetween(t *testing.T) {
	t0 := time.Now()
	prev := sample{at: t0, writes: 100, captured: 90, sinks: map[string]sinkSample{"redis": {processed: 50, e2eSum: 1, e2eCount: 10}}}
	cur := sample{at: t0.Add(2 * time.Second), writes: 500, captured: 490, sinks: map[string]sinkSample{"redis": {processed: 450, e2eSum: 3, e2eCount: 110}}}
	r := rateBetween(prev, cur)
	if r.writes != 200 || r.captured != 200 || r.sinks["redis"] != 200 || r.e2e["redis"] != 20*time.Millisecond {
		t.Errorf("%+v", r)
	}
	if r := rateBetween(cur, cur); r.writes != 0 {
		t.Errorf("zero interval: %+v", r)
	}
}

func TestCountingHandler(t *testing.T) {
	var buf bytes.Buffer
	w := &warnings{}
	logger := slog.New(countingHandler{Handler: slog.NewTextHandler(&buf, nil), w: w}).With("component", "sink")
	logger.Info("fine")
	logger.WithGroup("g").Warn("retrying", "err", errors.New("redis down"))
	logger.Error("failed")
	n, last := w.get()
	if n != 2 || last != "failed" {
		t.Errorf("%d %q", n, last)
	}
	logger.Warn("retrying", "attempt", 2, "err", "timeout")
	if _, last := w.get(); last != "retrying: timeout" {
		t.Errorf("last %q", last)
	}
	if strings.Count(buf.String(), "\n") != 4 || !strings.Contains(buf.String(), "component=sink") {
		t.Errorf("log:\n%s", buf.String())
	}
}

func TestComponents(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c := newComponents(cancel)
	c.start("a", func() error { <-ctx.Done(); return nil })
	c.start("b", func() error { return errors.New("bad config") })
	<-c.done
	if err := c.failed(); err == nil || err.Error() != "b: bad config" {
		t.Errorf("failed: %v", err)
	}
	if err := c.stop(); err == nil || err.Error() != "b: bad config" {
		t.Errorf("stop: %v", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	c = newComponents(cancel)
	c.start("quitter", func() error { return nil })
	c.start("ok", func() error { <-ctx.Done(); return nil })
	<-c.done
	if err := c.failed(); err == nil || err.Error() != "quitter stopped unexpectedly" {
		t.Errorf("early return: %v", err)
	}
	_ = c.stop()

	ctx, cancel = context.WithCancel(context.Background())
	c = newComponents(cancel)
	c.start("ok", func() error { <-ctx.Done(); return nil })
	if err := c.stop(); err != nil {
		t.Errorf("clean stop: %v", err)
	}
}

func TestMissingErrorMessage(t *testing.T) {
	e := &MissingError{What: []string{"redis-server"}, Packages: []string{"redis-server"}}
	want := "the demo needs redis-server, which is not installed: install the Debian/Ubuntu package redis-server (sudo apt-get install redis-server)"
	if e.Error() != want {
		t.Errorf("got  %q\nwant %q", e.Error(), want)
	}
}

func itoa(n int) string { return count(int64(n)) }

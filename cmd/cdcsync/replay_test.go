package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/capture"
)

func TestReplayProgressLine(t *testing.T) {
	p := progress{done: 45_000, total: 100_000, current: "public.orders", status: capture.BackfillRunning}
	got := progressLine(p, 12_345, 20)
	want := "public.orders [=========>          ] 45,000/100,000 rows  12,345 rows/s  ETA 4s"
	if got != want {
		t.Errorf("progressLine:\n got %q\nwant %q", got, want)
	}
	if got := plainLine(p, 12_345); got != "public.orders: running 45000/100000 rows (45%), 12345 rows/s, ETA 4s" {
		t.Errorf("plainLine = %q", got)
	}
	full := progressLine(progress{done: 10, total: 10, current: "t"}, 0, 4)
	if !strings.Contains(full, "[====]") || !strings.Contains(full, "ETA 0s") {
		t.Errorf("complete bar = %q", full)
	}
	if got := eta(progress{done: 1, total: 10}, 0); got != "?" {
		t.Errorf("eta without a rate = %q, want ?", got)
	}
}

func TestReplaySummarize(t *testing.T) {
	bfs := []capture.Backfill{
		{Schema: "public", Table: "orders", Status: capture.BackfillDone, RowsDone: 120, RowsTotal: 100},
		{Schema: "public", Table: "items", Status: capture.BackfillRunning, RowsDone: 5, RowsTotal: 50},
	}
	p := summarize(bfs)
	if p.done != 125 || p.total != 170 || p.current != "public.items" || p.finished || p.pending {
		t.Errorf("summarize = %+v", p)
	}
	bfs[1].Status = capture.BackfillCancelled
	if !summarize(bfs).finished {
		t.Error("all final: want finished")
	}
}

func TestReplayFinishExitStatus(t *testing.T) {
	var out bytes.Buffer
	done := []capture.Backfill{{ID: 1, Schema: "public", Table: "orders", Status: capture.BackfillDone, RowsDone: 10, RowsSkipped: 2}}
	if err := finish(&out, done, time.Second); err != nil {
		t.Fatalf("finish(done) = %v", err)
	}
	if !strings.Contains(out.String(), "backfill 1 public.orders: done, 10 rows (2 taken from the live stream") {
		t.Errorf("output %q", out.String())
	}
	failed := append(done, capture.Backfill{ID: 2, Schema: "public", Table: "items", Status: capture.BackfillFailed, RowsDone: 3, Error: "boom"})
	err := finish(&out, failed, time.Second)
	ee, ok := err.(*exitError)
	if !ok || ee.Code != exitFailure || !strings.Contains(err.Error(), "backfill 2 public.items: failed after 3 rows: boom") {
		t.Errorf("finish(failed) = %v", err)
	}
}

func TestGroupDigitsAndRate(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -4500: "-4,500"} {
		if got := groupDigits(n); got != want {
			t.Errorf("groupDigits(%d) = %q, want %q", n, got, want)
		}
	}
	r := newRateMeter(5 * time.Second)
	t0 := time.Unix(0, 0)
	r.add(t0, 0)
	r.add(t0.Add(2*time.Second), 2000)
	if got := r.perSecond(); got != 1000 {
		t.Errorf("rate = %v, want 1000", got)
	}
	r.add(t0.Add(10*time.Second), 2000) // old samples leave the window
	if got := r.perSecond(); got != 0 {
		t.Errorf("rate after a stall = %v, want 0", got)
	}
}

func TestReplayUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{nil, "missing subcommand"},
		{[]string{"snapshots"}, `unknown subcommand "snapshots"`},
		{[]string{"snapshot"}, "give one of --tables, --status or --cancel"},
		{[]string{"snapshot", "--status", "--cancel", "3"}, "give one of"},
		{[]string{"snapshot", "--cancel", "x"}, `--cancel takes backfill ids, got "x"`},
		{[]string{"snapshot", "--status", "--where", "a = 1"}, "go with --tables"},
		{[]string{"snapshot", "--tables", "public.orders", "extra"}, `unexpected argument "extra"`},
		{[]string{"snapshot", "--tables", "public.orders", "--chunk-size", "-1"}, "--chunk-size must be positive"},
	}
	for _, tc := range cases {
		err := replayCommand().Run(t.Context(), &streams{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}}, tc.args)
		ue, ok := err.(*usageError)
		if !ok || !strings.Contains(ue.msg, tc.want) {
			t.Errorf("replay %q = %v, want a usage error mentioning %q", tc.args, err, tc.want)
		}
	}
}

package demo

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cdcsync/cdcsync/internal/status"
)

// frame is what the live view shows at one moment.
type frame struct {
	elapsed time.Duration
	cur     sample
	rate    rates
	drift   driftState
	probe   probeStats
	// warnings counts warnings and errors logged by capture and the sinks;
	// lastWarning is the latest one's message.
	warnings    int64
	lastWarning string
}

// driftState is the outcome of the latest live verification.
type driftState struct {
	checked bool
	drifted int64
	at      time.Time
	took    time.Duration
	err     error
	cut     string // the consistent cut's LSN; empty when not at a cut
}

// view draws frames. On a terminal it redraws one block in place (ANSI
// cursor up and erase line); elsewhere (a pipe, a log file, CI) it prints
// one line every lineEvery.
type view struct {
	w        io.Writer
	terminal bool
	// lines is the height of the block drawn last, to move back over.
	lines     int
	lastLine  time.Time
	lineEvery time.Duration
}

func (v *view) draw(f frame) {
	if !v.terminal {
		if f.elapsed > 0 && time.Since(v.lastLine) < v.lineEvery {
			return
		}
		v.lastLine = time.Now()
		fmt.Fprintln(v.w, f.line())
		return
	}
	var buf bytes.Buffer
	if v.lines > 0 {
		fmt.Fprintf(&buf, "\x1b[%dA", v.lines)
	}
	lines := f.block()
	for _, l := range lines {
		buf.WriteString("\r\x1b[2K")
		buf.WriteString(l)
		buf.WriteByte('\n')
	}
	v.lines = len(lines)
	_, _ = v.w.Write(buf.Bytes())
}

// block renders the terminal view: one row per stage of the pipeline.
func (f frame) block() []string {
	lines := []string{fmt.Sprintf("%-16s %12s %14s", "", "per second", "total")}
	row := func(name string, rate float64, total int64, note string) {
		lines = append(lines, fmt.Sprintf("%-16s %12s %14s  %s", name, count(int64(rate+0.5)), count(total), note))
	}
	row("orders written", f.rate.writes, f.cur.writes, "order transactions committed to the order database")
	row("OrderCreated", f.rate.events, f.cur.events, fmt.Sprintf("outbox events on %s (%s published)", eventsTopic, count(f.cur.creates)))
	row("captured", f.rate.captured, f.cur.captured, "row changes Postgres → Kafka, slot lag "+status.Bytes(f.cur.slotLag))
	for _, name := range sinks {
		s := f.cur.sinks[name]
		note := fmt.Sprintf("consumer lag %s records", count(s.lag))
		if d, ok := f.rate.e2e[name]; ok {
			note += fmt.Sprintf(", commit to applied %s", d.Round(time.Millisecond))
		}
		row("sink "+name, f.rate.sinks[name], s.processed, note)
	}
	lines = append([]string{fmt.Sprintf("cdcsync demo, running %s (Ctrl-C stops and cleans up)", f.elapsed.Truncate(time.Second))}, lines...)
	lines = append(lines, "drift: "+f.drift.describe())
	lines = append(lines, "read-your-writes: "+f.probe.describe())
	warn := fmt.Sprintf("warnings: %d", f.warnings)
	if f.lastWarning != "" {
		warn += " (last: " + truncate(f.lastWarning, 80) + ")"
	}
	return append(lines, warn)
}

// line renders the one-line form for non-terminals.
func (f frame) line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "demo %s: orders %.0f/s (%d), OrderCreated events %d, captured %.0f/s, slot lag %s",
		f.elapsed.Truncate(time.Second), f.rate.writes, f.cur.writes, f.cur.events, f.rate.captured, status.Bytes(f.cur.slotLag))
	for _, name := range sinks {
		fmt.Fprintf(&b, ", %s %.0f/s lag %d", name, f.rate.sinks[name], f.cur.sinks[name].lag)
	}
	fmt.Fprintf(&b, ", drift %s", f.drift.short())
	if f.probe.Probes > 0 {
		fmt.Fprintf(&b, ", read-your-writes %d probes: stale without waiting %d/%d, after waiting %d/%d (redis/inventory)",
			f.probe.Probes, f.probe.StaleNoWaitRedis, f.probe.StaleNoWaitInventory, f.probe.StaleWaitedRedis, f.probe.StaleWaitedInventory)
	}
	if f.warnings > 0 {
		fmt.Fprintf(&b, ", warnings %d", f.warnings)
	}
	return b.String()
}

func (d driftState) describe() string {
	switch {
	case !d.checked:
		return "first check pending"
	case d.err != nil:
		return "check failed: " + truncate(d.err.Error(), 100)
	}
	how := "at a consistent cut: changes in flight are not drift"
	if d.cut == "" {
		how = "not at a cut: changes in flight count until applied"
	}
	return fmt.Sprintf("%d items or keys differ (checked %s ago in %s, %s)",
		d.drifted, time.Since(d.at).Truncate(time.Second), d.took.Round(time.Millisecond), how)
}

func (d driftState) short() string {
	switch {
	case !d.checked:
		return "pending"
	case d.err != nil:
		return "check failed"
	}
	if d.cut == "" {
		return fmt.Sprintf("%d (in flight included)", d.drifted)
	}
	return fmt.Sprintf("%d (at a cut)", d.drifted)
}

// count formats n with thousands separators: 12,345.
func count(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// truncate shortens s to at most n runes, on one line.
func truncate(s string, n int) string {
	r := []rune(strings.ReplaceAll(s, "\n", " "))
	if len(r) <= n {
		return string(r)
	}
	return string(r[:n-1]) + "…"
}

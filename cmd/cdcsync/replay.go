package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/capture"
	"github.com/cdcsync/cdcsync/config"
)

const replayUsage = `Usage:
  cdcsync replay snapshot --tables schema.table[,...] [--where SQL] [--chunk-size N] [--detach]
  cdcsync replay snapshot --status
  cdcsync replay snapshot --cancel ID[,ID...]
  cdcsync replay topic --sink inventory|redis --from beginning|OFFSET|TIME [--to end|OFFSET|TIME]

'replay snapshot' asks the running capture daemon (the one streaming CDCSYNC_SLOT) to re-read
the tables in primary-key chunks and emit their rows as op "r" events into the same topics
while live changes keep flowing; rows changed meanwhile come from the stream, so no sink
gets an older row than the source has. It then follows the progress (--detach: does not) and
exits 0 when every table is done, 1 when one failed or was cancelled.

  --tables      tables to re-read; each must be streamed by capture (CDCSYNC_TABLES)
  --where       SQL predicate over the table's columns, e.g. "created_at > now() - interval '1 day'";
                it is checked before anything starts and runs with capture's database privileges
  --chunk-size  rows per chunk (default CDCSYNC_SNAPSHOT_CHUNK_SIZE)
  --status      list this slot's backfills
  --cancel      stop backfills; rows already sent stay in Kafka

  It reads capture's variables: CDCSYNC_SOURCE_URL, CDCSYNC_SLOT, CDCSYNC_PUBLICATION,
  CDCSYNC_STATE_SCHEMA, CDCSYNC_SNAPSHOT_CHUNK_SIZE (see 'cdcsync capture --help').

'replay topic' re-applies a range of a sink's topics to its store: the orders topic
(CDCSYNC_ORDERS_TABLE) for the inventory sink, the topics of CDCSYNC_TABLES for the redis
sink. Applying is idempotent by position, so what the store already holds changes nothing
and a replay from the beginning rebuilds a store that was lost or emptied (say, a flushed
Redis). Records no sink can apply go to the dead-letter topic, as in the daemon. It shows
progress and exits 0 when the range is applied.

  --sink  the sink to apply to: inventory (inventory_items and the availability cache) or
          redis (the row cache)
  --from  where to start in each partition: beginning (the oldest record kept), an offset,
          or an RFC 3339 time such as 2024-05-01T12:00:00Z (the first record Kafka
          timestamped at or after it, i.e. produced by capture since then)
  --to    where to stop, not included: end (default: the end offsets when the replay
          starts; it never waits for newer records), an offset or an RFC 3339 time

  It reads the partitions itself, without a consumer group, and commits no offsets: the
  sink daemon's group and offsets are untouched and the daemon may keep running (the
  position checks order their writes). Caveat: while a cache is being rebuilt, a live update
  that leaves a TOASTed column unchanged loses that column until the row's next full
  change; if the cached tables have such columns, rebuild with the redis sink stopped.
  An offset applies in every partition, clamped to what the partition holds.

  It reads the sink's variables listed below; --sink replaces CDCSYNC_SINKS, and the
  consumer group and HTTP settings are not used.`

// replayCommand: `replay snapshot` re-reads tables into Kafka while capture
// runs; `replay topic` re-applies a topic range to a sink.
func replayCommand() command {
	return command{
		Name: "replay",
		Summary: "backfills: 'replay snapshot --tables schema.table[,..]' re-reads tables into Kafka while capture " +
			"runs; 'replay topic --sink inventory|redis --from ...' re-applies a topic range to a sink",
		Usage:  replayUsage,
		Config: func() any { return &replayConfig{} },
		Run: func(ctx context.Context, st *streams, args []string) error {
			if len(args) == 0 {
				return &usageError{msg: "missing subcommand\n" + replayUsage}
			}
			switch args[0] {
			case "snapshot":
				return replaySnapshot(ctx, st, args[1:])
			case "topic":
				return replayTopic(ctx, st, args[1:])
			}
			return &usageError{msg: fmt.Sprintf("unknown subcommand %q\n%s", args[0], replayUsage)}
		},
	}
}

func replaySnapshot(ctx context.Context, st *streams, args []string) error {
	fs := flag.NewFlagSet("replay snapshot", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	tables := fs.String("tables", "", "")
	where := fs.String("where", "", "")
	chunk := fs.Int("chunk-size", 0, "")
	status := fs.Bool("status", false, "")
	cancel := fs.String("cancel", "", "")
	detach := fs.Bool("detach", false, "")
	if err := fs.Parse(args); err != nil {
		return &usageError{msg: err.Error() + "\n" + replayUsage}
	}
	if fs.NArg() > 0 {
		return &usageError{msg: fmt.Sprintf("unexpected argument %q\n%s", fs.Arg(0), replayUsage)}
	}
	modes := 0
	for _, set := range []bool{*tables != "", *status, *cancel != ""} {
		if set {
			modes++
		}
	}
	if modes != 1 {
		return &usageError{msg: "give one of --tables, --status or --cancel\n" + replayUsage}
	}
	if *tables == "" && (*where != "" || *chunk != 0 || *detach) {
		return &usageError{msg: "--where, --chunk-size and --detach go with --tables"}
	}
	if *chunk < 0 {
		return &usageError{msg: fmt.Sprintf("--chunk-size must be positive, got %d", *chunk)}
	}
	var cancelIDs []int64
	if *cancel != "" {
		for _, s := range strings.Split(*cancel, ",") {
			id, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
			if err != nil || id <= 0 {
				return &usageError{msg: fmt.Sprintf("--cancel takes backfill ids, got %q", s)}
			}
			cancelIDs = append(cancelIDs, id)
		}
	}

	var cfg config.Capture
	if err := loadConfig(&cfg); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, cfg.SourceURL)
	if err != nil {
		return fmt.Errorf("connect to source (CDCSYNC_SOURCE_URL %s): %w", config.RedactURL(cfg.SourceURL), err)
	}
	defer conn.Close(context.Background())

	switch {
	case *status:
		return printBackfills(ctx, st.Stdout, conn, cfg)
	case *cancel != "":
		return cancelBackfills(ctx, st.Stdout, conn, cfg, cancelIDs)
	}
	req := capture.BackfillRequest{Where: *where, ChunkSize: *chunk}
	for _, t := range strings.Split(*tables, ",") {
		if t = strings.TrimSpace(t); t != "" {
			req.Tables = append(req.Tables, t)
		}
	}
	bfs, err := capture.RequestBackfill(ctx, conn, cfg, req)
	if err != nil {
		for _, e := range []error{capture.ErrBadWhere, capture.ErrNoSuchTable, capture.ErrNoKey, capture.ErrNotPublished, capture.ErrBadChunkSize} {
			if errors.Is(err, e) {
				return &usageError{msg: err.Error() + "; nothing was started"}
			}
		}
		return err
	}
	ids := make([]int64, len(bfs))
	for i, b := range bfs {
		ids[i] = b.ID
		fmt.Fprintf(st.Stdout, "backfill %d requested: %s, ~%d rows, chunks of %d%s (slot %s)\n",
			b.ID, b.TableName(), b.RowsTotal, b.ChunkSize, whereNote(b.Where), b.Slot)
	}
	if *detach {
		return nil
	}
	return followBackfills(ctx, st.Stdout, conn, cfg, ids)
}

func whereNote(where string) string {
	if where == "" {
		return ""
	}
	return ", where " + where
}

func cancelBackfills(ctx context.Context, w io.Writer, conn *pgx.Conn, cfg config.Capture, ids []int64) error {
	var errs []error
	for _, id := range ids {
		b, err := capture.CancelBackfill(ctx, conn, cfg, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(w, "backfill %d (%s) cancelled at %d rows; capture stops at its next chunk\n", b.ID, b.TableName(), b.RowsDone)
	}
	if len(errs) > 0 {
		return &exitError{Code: exitFailure, Err: errors.Join(errs...)}
	}
	return nil
}

func printBackfills(ctx context.Context, w io.Writer, conn *pgx.Conn, cfg config.Capture) error {
	bfs, err := capture.ListBackfills(ctx, conn, cfg, nil)
	if err != nil {
		return err
	}
	if len(bfs) == 0 {
		fmt.Fprintf(w, "no backfills for slot %s\n", cfg.Slot)
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTABLE\tSTATUS\tROWS\tCHUNKS\tWHERE\tUPDATED\tERROR")
	for _, b := range bfs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d/%d\t%d\t%s\t%s\t%s\n", b.ID, b.TableName(), b.Status, b.RowsDone,
			max(b.RowsTotal, b.RowsDone), b.ChunksDone, b.Where, b.UpdatedAt.Local().Format(time.DateTime), b.Error)
	}
	return tw.Flush()
}

// followBackfills shows progress until every backfill finished.
func followBackfills(ctx context.Context, w io.Writer, conn *pgx.Conn, cfg config.Capture, ids []int64) error {
	view := newProgressView(w)
	started := time.Now()
	hinted := false
	for {
		bfs, err := capture.ListBackfills(ctx, conn, cfg, ids)
		if err != nil {
			if ctx.Err() != nil {
				return interrupted(view, ids)
			}
			return err
		}
		p := summarize(bfs)
		if p.finished {
			view.clear()
			return finish(w, bfs, time.Since(started))
		}
		view.show(time.Now(), p)
		if !hinted && p.pending && time.Since(started) > 10*time.Second {
			hinted = true
			if active, err := slotActive(ctx, conn, cfg.Slot); err == nil && !active {
				view.breakLine()
				fmt.Fprintf(w, "waiting: no capture is streaming slot %s; the backfill starts when `cdcsync capture` runs with CDCSYNC_SLOT=%s\n", cfg.Slot, cfg.Slot)
			}
		}
		select {
		case <-ctx.Done():
			return interrupted(view, ids)
		case <-time.After(view.interval):
		}
	}
}

// progressView shows progress: a bar redrawn in place on a terminal, a
// plain line every few seconds otherwise (logs, pipes).
type progressView struct {
	w        io.Writer
	tty      bool
	interval time.Duration // how often the caller should call show
	rate     *rateMeter

	lineEvery time.Duration
	lastLine  time.Time
	lastShown string
	drawn     bool // a bar is on the terminal's current line
}

func newProgressView(w io.Writer) *progressView {
	v := &progressView{w: w, tty: canRedraw(w), interval: 250 * time.Millisecond,
		rate: newRateMeter(5 * time.Second), lineEvery: 2 * time.Second}
	if !v.tty {
		v.interval = 500 * time.Millisecond
	}
	return v
}

// show records p (for the rate) and displays it.
func (v *progressView) show(now time.Time, p progress) {
	v.rate.add(now, p.done)
	if v.tty {
		fmt.Fprint(v.w, "\r\033[K"+progressLine(p, v.rate.perSecond(), 30))
		v.drawn = true
		return
	}
	if line := plainLine(p, v.rate.perSecond()); line != v.lastShown && now.Sub(v.lastLine) >= v.lineEvery {
		fmt.Fprintln(v.w, line)
		v.lastShown, v.lastLine = line, now
	}
}

// clear erases the bar, for the final lines.
func (v *progressView) clear() {
	if v.drawn {
		fmt.Fprint(v.w, "\r\033[K")
		v.drawn = false
	}
}

// breakLine ends the bar's line, so that a message printed now keeps it.
func (v *progressView) breakLine() {
	if v.drawn {
		fmt.Fprintln(v.w)
		v.drawn = false
	}
}

func interrupted(view *progressView, ids []int64) error {
	view.breakLine()
	list := make([]string, len(ids))
	for i, id := range ids {
		list[i] = strconv.FormatInt(id, 10)
	}
	fmt.Fprintf(view.w, "stopped following; the backfill goes on in capture (see --status; stop it with --cancel %s)\n", strings.Join(list, ","))
	return &exitError{Code: 130}
}

func slotActive(ctx context.Context, conn *pgx.Conn, slot string) (bool, error) {
	var active bool
	err := conn.QueryRow(ctx, "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active)
	return active, err
}

// finish prints one line per backfill and decides the exit status.
func finish(w io.Writer, bfs []capture.Backfill, elapsed time.Duration) error {
	var failed []string
	for _, b := range bfs {
		switch b.Status {
		case capture.BackfillDone:
			skipped := ""
			if b.RowsSkipped > 0 {
				skipped = fmt.Sprintf(" (%d taken from the live stream instead: changed during their chunk)", b.RowsSkipped)
			}
			fmt.Fprintf(w, "backfill %d %s: done, %d rows%s\n", b.ID, b.TableName(), b.RowsDone, skipped)
		default:
			msg := fmt.Sprintf("backfill %d %s: %s after %d rows", b.ID, b.TableName(), b.Status, b.RowsDone)
			if b.Error != "" {
				msg += ": " + b.Error
			}
			fmt.Fprintln(w, msg)
			failed = append(failed, msg)
		}
	}
	if len(failed) > 0 {
		return &exitError{Code: exitFailure, Err: errors.New(strings.Join(failed, "; "))}
	}
	fmt.Fprintf(w, "all done in %s\n", elapsed.Round(100*time.Millisecond))
	return nil
}

// progress is what a progressView shows: the backfills being followed,
// summed, or a topic replay.
type progress struct {
	done, total int64
	current     string // table of the running backfill
	status      string
	unit        string // what done and total count; "" is rows
	pending     bool   // some backfill has not started
	finished    bool   // every backfill reached a final status
}

func (p progress) units() string {
	if p.unit == "" {
		return "rows"
	}
	return p.unit
}

func summarize(bfs []capture.Backfill) progress {
	p := progress{finished: len(bfs) > 0, status: capture.BackfillPending}
	for _, b := range bfs {
		p.done += b.RowsDone
		p.total += max(b.RowsTotal, b.RowsDone)
		if !b.Finished() {
			p.finished = false
		}
		switch b.Status {
		case capture.BackfillPending:
			p.pending = true
			if p.current == "" {
				p.current = b.TableName()
			}
		case capture.BackfillRunning:
			p.current, p.status = b.TableName(), b.Status
		}
	}
	return p
}

// progressLine is the terminal form: a bar, counts, rate and ETA.
func progressLine(p progress, perSecond float64, width int) string {
	frac := 0.0
	if p.total > 0 {
		frac = min(float64(p.done)/float64(p.total), 1)
	}
	filled := int(frac * float64(width))
	bar := strings.Repeat("=", filled)
	if filled < width {
		bar += ">" + strings.Repeat(" ", width-filled-1)
	}
	return fmt.Sprintf("%s [%s] %s/%s %s  %s %s/s  ETA %s", p.current, bar,
		groupDigits(p.done), groupDigits(p.total), p.units(), groupDigits(int64(perSecond)), p.units(), eta(p, perSecond))
}

// plainLine is the form for logs and pipes.
func plainLine(p progress, perSecond float64) string {
	pct := 0
	if p.total > 0 {
		pct = int(min(100*p.done/p.total, 100))
	}
	return fmt.Sprintf("%s: %s %d/%d %s (%d%%), %d %s/s, ETA %s", p.current, p.status, p.done, p.total, p.units(), pct, int64(perSecond), p.units(), eta(p, perSecond))
}

func eta(p progress, perSecond float64) string {
	left := p.total - p.done
	if left <= 0 {
		return "0s"
	}
	if perSecond < 1 {
		return "?"
	}
	return (time.Duration(float64(left)/perSecond) * time.Second).Round(time.Second).String()
}

// groupDigits writes n with thousands separators: 1234567 -> 1,234,567.
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// rateMeter computes rows/s over a sliding window of samples.
type rateMeter struct {
	window  time.Duration
	samples []rateSample
}

type rateSample struct {
	at   time.Time
	rows int64
}

func newRateMeter(window time.Duration) *rateMeter { return &rateMeter{window: window} }

func (r *rateMeter) add(at time.Time, rows int64) {
	r.samples = append(r.samples, rateSample{at, rows})
	for len(r.samples) > 2 && at.Sub(r.samples[1].at) >= r.window {
		r.samples = r.samples[1:]
	}
}

func (r *rateMeter) perSecond() float64 {
	if len(r.samples) < 2 {
		return 0
	}
	first, last := r.samples[0], r.samples[len(r.samples)-1]
	d := last.at.Sub(first.at).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(last.rows-first.rows) / d
}

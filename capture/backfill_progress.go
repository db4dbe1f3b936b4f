package capture

import (
	"time"
)

// progress reports a running backfill (the initial snapshot's included):
// rows done of the expected total, the rate and the time left, in a log
// line every progressEvery and in the cdcsync_capture_backfill_* gauges.
// `cdcsync status` computes the same from the backfills table.
type progress struct {
	b         *backfiller
	table     string
	id        int64
	started   time.Time
	startRows int64
	logged    time.Time
}

func newProgress(b *backfiller, bf *Backfill) *progress {
	now := time.Now()
	p := &progress{b: b, table: bf.TableName(), id: bf.ID, started: now, startRows: bf.RowsDone, logged: now}
	p.set(bf, 0)
	return p
}

// update records progress stored for bf.
func (p *progress) update(bf *Backfill) {
	elapsed := time.Since(p.started).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(bf.RowsDone-p.startRows) / elapsed
	}
	eta := p.set(bf, rate)
	if bf.Finished() || time.Since(p.logged) < progressEvery {
		return
	}
	p.logged = time.Now()
	total := max(bf.RowsTotal, bf.RowsDone)
	pct := 100.0
	if total > 0 {
		pct = float64(bf.RowsDone) * 100 / float64(total)
	}
	p.b.log.Info("backfill progress", "backfill", p.id, "table", p.table, "rows_done", bf.RowsDone, "rows_total", total,
		"percent", int(pct), "rows_per_s", int64(rate), "eta", eta.Round(time.Second))
}

// set updates the gauges and returns the estimated time left (0 when
// unknown or done).
func (p *progress) set(bf *Backfill, rate float64) time.Duration {
	m := p.b.metrics
	total := max(bf.RowsTotal, bf.RowsDone)
	p.b.recovery.noteRows(bf.ID, bf.RowsDone, total)
	m.backfillRowsDone.WithLabelValues(p.table).Set(float64(bf.RowsDone))
	m.backfillRowsExpected.WithLabelValues(p.table).Set(float64(total))
	var eta time.Duration
	if rate > 0 && total > bf.RowsDone {
		eta = time.Duration(float64(total-bf.RowsDone) / rate * float64(time.Second))
	}
	m.backfillETA.WithLabelValues(p.table).Set(eta.Seconds())
	return eta
}

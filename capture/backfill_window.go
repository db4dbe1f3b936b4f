package capture

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/jackc/pglogrepl"

	"github.com/cdcsync/cdcsync/pipeline"
)

// The stream goroutine's side of a backfill: it sees the watermarks in WAL
// order among the transactions, records the keys changed between them and
// emits the chunk at the high watermark. See backfill.go for the algorithm.

// window is one chunk between its watermarks.
type window struct {
	tag   string
	table tableInfo
	// cancelled tells the stream to stop recording keys for a window the
	// backfiller gave up on (its high watermark will never come).
	cancelled atomic.Bool

	rows []Change // set (under backfiller.mu) before the high watermark

	// Owned by the stream goroutine between the watermarks.
	changed   map[string]struct{} // keys of the table changed in the window
	truncated bool

	// Written by the stream goroutine before it closes done.
	done    chan struct{}
	high    pglogrepl.LSN // the watermark's LSN, committed in the tracker after the rows
	emitted int
	skipped int
	err     error // the chunk must be read again
}

// backfillMessage handles backfill signals and watermarks. It reports false
// for other messages.
func (s *stream) backfillMessage(ctx context.Context, m *pglogrepl.LogicalDecodingMessage, at pglogrepl.LSN) (bool, error) {
	switch m.Prefix {
	case signalPrefix:
		if s.backfill != nil {
			s.backfill.signal()
		}
		return true, nil
	case watermarkPrefix:
		if s.backfill == nil || m.Transactional || s.inTx {
			return true, nil
		}
		return true, s.backfill.watermark(ctx, s, string(m.Content), at)
	}
	return false, nil
}

// observeBackfill records the key of a change made while a backfill window
// is open.
func (s *stream) observeBackfill(c Change) {
	b := s.backfill
	if b == nil || b.open == nil {
		return
	}
	w := b.open
	if w.cancelled.Load() {
		b.open = nil
		return
	}
	if c.Schema != w.table.Schema || c.Table != w.table.Name {
		return
	}
	if c.Key == nil {
		w.truncated = true // a truncate: nothing read before it may be emitted
		return
	}
	b.keyBuf = c.Key.AppendJSON(b.keyBuf[:0])
	w.changed[string(b.keyBuf)] = struct{}{}
}

// watermark opens a window at its low watermark and emits the chunk at its
// high watermark. Watermarks of other captures, or of windows from before
// a restart, are not registered and are ignored.
func (b *backfiller) watermark(ctx context.Context, s *stream, content string, at pglogrepl.LSN) error {
	if tag, ok := strings.CutSuffix(content, ":low"); ok {
		b.mu.Lock()
		w := b.windows[tag]
		b.mu.Unlock()
		if w != nil && !w.cancelled.Load() {
			w.changed = map[string]struct{}{}
			b.open = w
		}
		return nil
	}
	tag, ok := strings.CutSuffix(content, ":high")
	if !ok {
		return nil
	}
	b.mu.Lock()
	w := b.windows[tag]
	delete(b.windows, tag)
	var rows []Change
	if w != nil {
		rows, w.rows = w.rows, nil
	}
	b.mu.Unlock()
	if w == nil {
		return nil
	}
	if b.open != w {
		// The low watermark was not seen in this session: which keys
		// changed is unknown, so nothing from the chunk may be emitted.
		w.err = fmt.Errorf("backfill window %s: high watermark without low watermark", tag)
		close(w.done)
		return nil
	}
	b.open = nil
	// at is the END of the watermark's WAL record, and a transaction's
	// commit LSN is the START of its commit record: a transaction that
	// commits right after the watermark has commit LSN == at, and its
	// changes (Change < at) would sort before rows placed at {at, at}
	// although the chunk did not see them. at-1 lies inside the
	// watermark's own record: after every commit before it, before every
	// commit after it.
	pos := pipeline.Position{Commit: at - 1, Change: at - 1}
	for _, ch := range rows {
		if w.truncated || len(w.changed) > 0 && w.changedKey(ch, &b.keyBuf) {
			w.skipped++
			continue
		}
		ch.Position = pos
		ch.Event.SetPosition(pos)
		if err := s.emit(ctx, ch); err != nil {
			return err
		}
		w.emitted++
	}
	if w.emitted > 0 {
		b.metrics.snapshotRows.WithLabelValues(w.table.String()).Add(float64(w.emitted))
	}
	// The rows belong to the high watermark: once they and everything
	// before are acknowledged, it may be confirmed, and the backfiller
	// learns from the confirmed LSN that the chunk is on Kafka.
	s.tracker.Commit(at)
	w.high = at
	close(w.done)
	return nil
}

func (w *window) changedKey(ch Change, buf *[]byte) bool {
	*buf = ch.Key.AppendJSON((*buf)[:0])
	_, ok := w.changed[string(*buf)]
	return ok
}

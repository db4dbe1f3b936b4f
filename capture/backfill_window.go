package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
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
	// mark is the backfill's progress once this chunk is on Kafka (set
	// under backfiller.mu before the high watermark); exactly-once
	// delivery commits it in the checkpoint with the chunk's rows.
	mark   pipeline.BackfillMark
	markID int64
	// source.snapshot of the first and last rows emitted (the initial
	// snapshot's first and last chunks); "" keeps the rows' mark.
	firstMark, lastMark string

	// Owned by the stream goroutine between the watermarks.
	changed   map[string]*keyChange // keys of the table changed in the window
	truncated bool
	bytes     int  // memory held by changed, bounded by maxBytes
	maxBytes  int  // CDCSYNC_SNAPSHOT_MAX_CHUNK_BYTES
	overflow  bool // changed outgrew maxBytes: the chunk is read again

	// Written by the stream goroutine before it closes done.
	done     chan struct{}
	high     pglogrepl.LSN // the watermark's LSN, committed in the tracker after the rows
	emitted  int
	skipped  int
	repaired int   // rows emitted with the window's newer values (see keyChange)
	err      error // the chunk must be read again
}

// keyChange is what the window's changes of one key leave a fresh sink
// with. A change that carries the whole row (insert, delete, update with
// every column) makes the key complete: the chunk's row is dropped, the
// stream has a newer one. An update whose unchanged TOAST columns were not
// sent, with no complete change of the key before it in the window, leaves
// a sink that never had the row with a partial one: partial then holds the
// columns the window's changes carried, newest value each. The missing
// columns were unchanged by every change of the key in the window, so the
// chunk's row, read inside the window, has their current value: at the
// high watermark the chunk's row is emitted with partial's values over it,
// which is the row as of the high watermark.
type keyChange struct {
	partial pipeline.Row // nil when complete
}

// errWindowOverflow: more keys changed during a chunk's window than
// CDCSYNC_SNAPSHOT_MAX_CHUNK_BYTES allows to remember.
var errWindowOverflow = errors.New("keys changed during the chunk exceed CDCSYNC_SNAPSHOT_MAX_CHUNK_BYTES")

// keyChangeOverhead approximates a map entry's memory besides the key's
// and the values' bytes.
const keyChangeOverhead = 64

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
	case resnapshotPrefix:
		return true, s.resnapshotDone(ctx, string(m.Content), at)
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
	if w.overflow {
		return
	}
	b.keyBuf = c.Key.AppendJSON(b.keyBuf[:0])
	kc := w.changed[string(b.keyBuf)]
	if kc == nil {
		kc = &keyChange{}
		w.changed[string(b.keyBuf)] = kc
		w.bytes += len(b.keyBuf) + keyChangeOverhead
		// A partial first change: the row a fresh sink would hold.
		if c.Event != nil && len(c.Event.Unchanged) > 0 {
			kc.partial = mergePartial(nil, c.Event)
			w.bytes += rowBytes(kc.partial)
		}
	} else if kc.partial != nil {
		w.bytes -= rowBytes(kc.partial)
		if c.Event != nil && len(c.Event.Unchanged) > 0 {
			kc.partial = mergePartial(kc.partial, c.Event)
			w.bytes += rowBytes(kc.partial)
		} else {
			kc.partial = nil // the whole row (or its delete) is in the stream
		}
	}
	if w.maxBytes > 0 && w.bytes > w.maxBytes {
		// Which chunk rows are stale is no longer known: drop the set
		// and have the chunk read again.
		w.overflow, w.changed, w.bytes = true, nil, 0
	}
}

// mergePartial returns the columns ev carries (copied: the decoder's
// buffers are not the window's) and, for its unchanged TOAST columns, the
// values prev holds.
func mergePartial(prev pipeline.Row, ev *pipeline.Event) pipeline.Row {
	out := make(pipeline.Row, 0, len(ev.After)+len(ev.Unchanged))
	for _, c := range ev.After {
		out = append(out, pipeline.Column{Name: c.Name, Value: bytes.Clone(c.Value)})
	}
	for _, name := range ev.Unchanged {
		if v, ok := prev.Get(name); ok {
			out = append(out, pipeline.Column{Name: name, Value: v})
		}
	}
	return out
}

func rowBytes(r pipeline.Row) int {
	n := 0
	for _, c := range r {
		n += len(c.Name) + len(c.Value) + 32
	}
	return n
}

// repair returns ch's row with the values of partial over it.
func repair(ch Change, partial pipeline.Row) Change {
	row := slices.Clone(ch.Event.After)
	for i, c := range row {
		if v, ok := partial.Get(c.Name); ok {
			row[i].Value = v
		}
	}
	ev := *ch.Event
	ev.After = row
	ch.Event = &ev
	return ch
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
			w.changed = map[string]*keyChange{}
			w.maxBytes = b.cfg.SnapshotMaxBytes
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
	var mark pipeline.BackfillMark
	if w != nil {
		rows, w.rows, mark = w.rows, nil, w.mark
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
	if w.overflow {
		w.err = fmt.Errorf("backfill window %s: %w; reading the chunk again", tag, errWindowOverflow)
		close(w.done)
		return nil
	}
	// at is the END of the watermark's WAL record, and a transaction's
	// commit LSN is the START of its commit record: a transaction that
	// commits right after the watermark has commit LSN == at, and its
	// changes (Change < at) would sort before rows placed at {at, at}
	// although the chunk did not see them. at-1 lies inside the
	// watermark's own record: after every commit before it, before every
	// commit after it.
	pos := pipeline.Position{Epoch: b.source.Epoch, Commit: at - 1, Change: at - 1}
	// Which rows go out, first: the first and last of them may carry
	// the initial snapshot's marks.
	out := rows[:0]
	for _, ch := range rows {
		if w.truncated {
			w.skipped++
			continue
		}
		if len(w.changed) > 0 {
			if kc := w.changedKey(ch, &b.keyBuf); kc != nil {
				if kc.partial == nil {
					w.skipped++
					continue
				}
				ch = repair(ch, kc.partial)
				w.repaired++
			}
		}
		out = append(out, ch)
	}
	if len(out) > 0 && w.firstMark != "" {
		out[0].Event.Source.Snapshot = w.firstMark
	}
	if len(out) > 0 && w.lastMark != "" {
		out[len(out)-1].Event.Source.Snapshot = w.lastMark
	}
	for _, ch := range out {
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
	if s.txn != nil && w.markID != 0 {
		mark.RowsSkipped += int64(w.skipped)
		s.txn.markBackfill(w.markID, mark)
	}
	// The rows belong to the high watermark: once they and everything
	// before are acknowledged, it may be confirmed, and the backfiller
	// learns from the confirmed LSN that the chunk is on Kafka.
	s.tracker.Commit(at)
	w.high = at
	close(w.done)
	return nil
}

func (w *window) changedKey(ch Change, buf *[]byte) *keyChange {
	*buf = ch.Key.AppendJSON((*buf)[:0])
	return w.changed[string(*buf)]
}

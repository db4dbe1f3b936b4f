package demo

import (
	"context"
	"log/slog"
	"sync"
)

// warnings counts the records at warning level and above that pass
// through a logger, and keeps the latest message, for the live view: the
// log itself goes to a file so that it does not scroll the view away.
type warnings struct {
	mu   sync.Mutex
	n    int64
	last string
}

func (w *warnings) get() (int64, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n, w.last
}

// countingHandler wraps a handler and counts into w.
type countingHandler struct {
	slog.Handler
	w *warnings
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.w.mu.Lock()
		h.w.n++
		h.w.last = r.Message
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "err" {
				h.w.last += ": " + a.Value.String()
				return false
			}
			return true
		})
		h.w.mu.Unlock()
	}
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return countingHandler{Handler: h.Handler.WithAttrs(attrs), w: h.w}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{Handler: h.Handler.WithGroup(name), w: h.w}
}

package demo

import (
	"io"
	"sync"
)

// watchedWriter passes writes to w until one fails, and then calls gone
// once and drops everything else: a failed write to the demo's output
// means nobody reads it any more (the pager it was piped into exited, or
// its terminal closed), so the demo should stop instead of running on
// unseen with its servers.
type watchedWriter struct {
	w      io.Writer
	gone   func()
	mu     sync.Mutex
	failed bool
}

func (ww *watchedWriter) Write(p []byte) (int, error) {
	ww.mu.Lock()
	defer ww.mu.Unlock()
	if ww.failed {
		return len(p), nil
	}
	n, err := ww.w.Write(p)
	if err != nil {
		ww.failed = true
		// gone only cancels a context: safe to call under the lock.
		ww.gone()
		return len(p), nil
	}
	return n, nil
}

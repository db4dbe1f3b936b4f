package demo

import (
	"context"
	"sync"
	"time"

	"github.com/cdcsync/cdcsync/internal/verify"
)

// liveDrift runs the verification over and over while the demo runs and
// keeps the latest outcome for the view. Between runs it waits
// driftEvery, or twice as long as the last run took, so that a growing
// orders table never keeps the databases busy verifying.
type liveDrift struct {
	mu    sync.Mutex
	state driftState
}

func (l *liveDrift) get() driftState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

func (l *liveDrift) run(ctx context.Context, v *verify.Verifier) {
	for {
		start := time.Now()
		r, err := v.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		st := driftState{checked: true, at: time.Now(), took: time.Since(start), err: err}
		if r != nil {
			st.drifted, st.cut = r.Drifted, r.Cut
		}
		l.mu.Lock()
		l.state = st
		l.mu.Unlock()
		t := time.NewTimer(max(driftEvery, 2*st.took))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

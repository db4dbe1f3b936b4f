package sink

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is an exponential retry delay with jitter: first, doubling up to
// max, each wait randomised to [d/2, d) so that sinks restarted together do
// not hammer a recovering database in step.
type backoff struct {
	first, max time.Duration
	next       time.Duration
}

func newBackoff(first, max time.Duration) *backoff {
	if max < first {
		max = first
	}
	return &backoff{first: first, max: max, next: first}
}

// wait sleeps for the next delay; it returns false if stop is done first.
func (b *backoff) wait(stop context.Context) bool {
	d := b.next
	b.next = min(b.next*2, b.max)
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop.Done():
		return false
	}
}

// retry runs op until it succeeds. Each attempt gets run as its context;
// between attempts it backs off, and it gives up (returning the last error)
// once stop is done. Separating the two lets an attempt already in progress
// finish after stop (a shutdown) while no new attempt is started.
func retry(stop, run context.Context, max time.Duration, op func(context.Context) error, onErr func(attempt int, err error)) error {
	b := newBackoff(100*time.Millisecond, max)
	for attempt := 1; ; attempt++ {
		err := op(run)
		if err == nil {
			return nil
		}
		onErr(attempt, err)
		if stop.Err() != nil || !b.wait(stop) {
			return err
		}
	}
}

package sink

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Readiness receives the sinks' state for /readyz: ready while every sink
// of the process has joined its consumer group and its store answers; not
// ready while a store is down (the sink retries), the group cannot be
// joined, or the process shuts down.
type Readiness interface {
	SetReady()
	SetNotReady(reason string)
}

// Option adjusts Run.
type Option func(*options)

type options struct {
	ready      Readiness
	storeCheck time.Duration
	applied    *AppliedPositions // nil: Run keeps its own
}

// WithReadiness reports readiness to r. Without it nothing is reported.
func WithReadiness(r Readiness) Option { return func(o *options) { o.ready = r } }

// WithStoreCheckInterval sets how often each sink checks that its store
// answers (default 5s), so that a store that goes down is noticed while
// no changes arrive, and one that comes back before the next batch.
func WithStoreCheckInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.storeCheck = d
		}
	}
}

func newOptions(opts []Option) options {
	o := options{ready: noReadiness{}, storeCheck: 5 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

type noReadiness struct{}

func (noReadiness) SetReady()          {}
func (noReadiness) SetNotReady(string) {}

// readiness combines the health of every sink of one Run into the single
// state /readyz reports. It reports only changes.
type readiness struct {
	mu       sync.Mutex
	out      Readiness
	sinks    []*sinkHealth
	stopping string // set once Run shuts down
	last     string // what was reported last: "" ready, else the reason
	reported bool
}

func newReadiness(out Readiness) *readiness { return &readiness{out: out} }

// add registers a sink, not ready until it has joined its group.
func (r *readiness) add(sink string) *sinkHealth {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := &sinkHealth{parent: r, sink: sink, phase: "starting"}
	r.sinks = append(r.sinks, h)
	r.reportLocked()
	return h
}

// stop reports the process not ready for good (shutting down, stopped).
func (r *readiness) stop(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopping = reason
	r.reportLocked()
}

func (r *readiness) reportLocked() {
	reason := r.stopping
	if reason == "" {
		var parts []string
		for _, h := range r.sinks {
			if why := h.reasonLocked(); why != "" {
				parts = append(parts, h.sink+" sink: "+why)
			}
		}
		reason = strings.Join(parts, "; ")
	}
	if r.reported && reason == r.last {
		return
	}
	r.reported, r.last = true, reason
	if reason == "" {
		r.out.SetReady()
	} else {
		r.out.SetNotReady(reason)
	}
}

// sinkHealth is one sink's part of the readiness. A nil *sinkHealth
// ignores every call (Replay has nothing to report to).
type sinkHealth struct {
	parent *readiness
	sink   string
	// phase says why the sink is not consuming yet ("starting", "cannot
	// join ..."); empty once it has joined its group.
	phase string
	// storeErr is the last failed store check, applyErr the last failed
	// attempt of a batch still being retried; empty when fine.
	storeErr, applyErr string
	// gaps holds the partitions stopped because records were deleted
	// before the sink applied them (gap.go), by "topic/partition".
	gaps map[string]string
}

func (h *sinkHealth) reasonLocked() string {
	for _, k := range slices.Sorted(maps.Keys(h.gaps)) {
		return "partition stopped: " + h.gaps[k]
	}
	switch {
	case h.storeErr != "":
		return "store unreachable: " + h.storeErr
	case h.applyErr != "":
		return "applying fails, retrying: " + h.applyErr
	default:
		return h.phase
	}
}

func (h *sinkHealth) update(f func()) {
	if h == nil {
		return
	}
	r := h.parent
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
	r.reportLocked()
}

// waiting says why the sink does not consume yet (setting up its store,
// connecting, joining its group).
func (h *sinkHealth) waiting(reason string) { h.update(func() { h.phase = reason }) }

// joined: the sink is a member of its group (possibly with no partitions).
func (h *sinkHealth) joined() { h.update(func() { h.phase = "" }) }

// storeChecked records a store check's outcome.
func (h *sinkHealth) storeChecked(err error) {
	h.update(func() {
		h.storeErr = ""
		if err != nil {
			h.storeErr = oneLine(err.Error())
		}
	})
}

// applyFailed: an attempt to apply a batch failed and will be retried.
func (h *sinkHealth) applyFailed(err error) { h.update(func() { h.applyErr = oneLine(err.Error()) }) }

// gapStopped: a partition is stopped because records were lost.
func (h *sinkHealth) gapStopped(partition, reason string) {
	h.update(func() {
		if h.gaps == nil {
			h.gaps = map[string]string{}
		}
		h.gaps[partition] = oneLine(reason)
	})
}

// gapCleared: a partition starts without a gap (after a rebuild, or
// consumed here again).
func (h *sinkHealth) gapCleared(partition string) {
	if h == nil {
		return
	}
	h.parent.mu.Lock()
	_, stopped := h.gaps[partition]
	h.parent.mu.Unlock()
	if stopped {
		h.update(func() { delete(h.gaps, partition) })
	}
}

// applied: a batch was applied.
func (h *sinkHealth) applied() {
	if h == nil {
		return
	}
	h.parent.mu.Lock()
	fine := h.applyErr == ""
	h.parent.mu.Unlock()
	if !fine { // the common case takes the lock once and reports nothing
		h.update(func() { h.applyErr = "" })
	}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

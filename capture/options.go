package capture

import (
	"context"
	"time"
)

// Readiness receives capture's state for /readyz: ready while it streams
// (or stands by for a slot another capture holds), not ready while it
// reconnects, is stalled on Kafka, or shuts down.
type Readiness interface {
	SetReady()
	SetNotReady(reason string)
}

// Option adjusts Run.
type Option func(*options)

type options struct {
	ready        Readiness
	stallTimeout time.Duration
	// afterSlotCreated, when set (only by this package's tests), runs
	// right after CREATE_REPLICATION_SLOT returns: crash tests stop
	// capture there.
	afterSlotCreated func(context.Context)
}

// WithReadiness reports readiness to r. Without it nothing is reported.
func WithReadiness(r Readiness) Option { return func(o *options) { o.ready = r } }

// WithStallTimeout sets how long messages may stay unacknowledged, with no
// progress at all, before capture reports itself not ready (default 30s).
func WithStallTimeout(d time.Duration) Option { return func(o *options) { o.stallTimeout = d } }

func newOptions(opts []Option) options {
	o := options{ready: noReadiness{}, stallTimeout: 30 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

type noReadiness struct{}

func (noReadiness) SetReady()          {}
func (noReadiness) SetNotReady(string) {}

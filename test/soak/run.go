package soak

import (
	"context"
	"sync"
	"time"
)

// startTracker samples the pipeline's progress in the background until the
// returned stop (idempotent) is called.
func startTracker(ctx context.Context, r *rig) (tr *tracker, stop func()) {
	tr = &tracker{p: &prober{sourceURL: r.orderURL(), brokers: []string{r.brokerAddr}}}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { tr.run(ctx, 200*time.Millisecond) })
	var once sync.Once
	return tr, func() { once.Do(func() { cancel(); wg.Wait() }) }
}

// writing is the soak's concurrent order writers at work.
type writing struct {
	writers []*writer
	errs    []error
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once
}

// startWriters starts set.Writers writers on the order database.
func startWriters(ctx context.Context, r *rig, set Settings) *writing {
	ctx, cancel := context.WithCancel(ctx)
	w := &writing{writers: make([]*writer, set.Writers), errs: make([]error, set.Writers), cancel: cancel}
	for i := range w.writers {
		w.writers[i] = newWriter(i, set.Writers, r.orderURL(), set.Items, set.Rate, set.Seed)
		w.wg.Go(func() { w.errs[i] = w.writers[i].run(ctx) })
	}
	return w
}

// stop stops the writers and waits for them; it may be called again.
func (w *writing) stop() {
	w.once.Do(func() { w.cancel(); w.wg.Wait() })
}

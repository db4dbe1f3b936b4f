package demo

import (
	"errors"
	"fmt"
	"sync"
)

// components are the goroutines running capture and the sinks. Each runs
// until the demo stops it; one that returns earlier has failed, even
// without an error.
type components struct {
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
	// done is closed when the first component returns.
	done     chan struct{}
	doneOnce sync.Once
	stopping bool
	cancel   func() // cancels the components' context
}

// newComponents returns an empty set; cancel must end the context the
// components run with.
func newComponents(cancel func()) *components {
	return &components{done: make(chan struct{}), cancel: cancel}
}

// start runs fn in a goroutine under name.
func (c *components) start(name string, fn func() error) {
	c.wg.Go(func() {
		err := fn()
		c.mu.Lock()
		if err != nil {
			c.errs = append(c.errs, fmt.Errorf("%s: %w", name, err))
		} else if !c.stopping {
			c.errs = append(c.errs, fmt.Errorf("%s stopped unexpectedly", name))
		}
		c.mu.Unlock()
		c.doneOnce.Do(func() { close(c.done) })
	})
}

// failed returns the components' errors so far, nil while all run.
func (c *components) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(c.errs...)
}

// stop cancels the components, waits for them and returns their errors.
func (c *components) stop() error {
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	return c.failed()
}

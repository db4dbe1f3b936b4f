package capture

import (
	"errors"
	"sync"

	"github.com/IBM/sarama"
)

// txnGuard wraps capture's sarama producer so that it is never closed
// under a CommitTxn or AbortTxn that still runs.
//
// Exactly once, a commit runs on a goroutine of its own while the stream
// keeps answering Postgres (txn.commit), and a stream that gives up on it
// (its context ended, the broker stalls) may leave it running, start
// another one, and close the producer. sarama's end of a transaction adds
// to the producer's in-flight count, sends on its input channel and waits
// for the count to drop; its shutdown does the same and then closes that
// channel. A commit still running, or one waiting for sarama's
// transaction lock behind it, then panics ("send on closed channel", or
// "WaitGroup is reused before previous Wait has returned"), and the process
// dies. With the guard, AsyncClose waits (on a goroutine: it stays
// asynchronous) until the running ends returned, and an end asked for once
// the producer is closing fails with errProducerClosing. Closing the
// producer's client (producer.close does, after its drain) makes the
// running ones return.
type txnGuard struct {
	sarama.AsyncProducer

	mu      sync.Mutex
	ending  int           // CommitTxn and AbortTxn calls running
	closing bool          // AsyncClose was called
	idle    chan struct{} // closed once closing and no end runs
}

// errProducerClosing: the transaction was not ended because the producer
// is being closed; the broker aborts it (the next producer's
// initialisation, or the transaction timeout).
var errProducerClosing = errors.New("the producer is closing")

func newTxnGuard(ap sarama.AsyncProducer) *txnGuard {
	return &txnGuard{AsyncProducer: ap, idle: make(chan struct{})}
}

// CommitTxn commits the open transaction unless the producer is closing.
func (g *txnGuard) CommitTxn() error { return g.end(g.AsyncProducer.CommitTxn) }

// AbortTxn aborts the open transaction unless the producer is closing.
func (g *txnGuard) AbortTxn() error { return g.end(g.AsyncProducer.AbortTxn) }

func (g *txnGuard) end(f func() error) error {
	g.mu.Lock()
	if g.closing {
		g.mu.Unlock()
		return errProducerClosing
	}
	g.ending++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		if g.ending--; g.ending == 0 && g.closing {
			close(g.idle)
		}
		g.mu.Unlock()
	}()
	return f()
}

// AsyncClose closes the producer once no CommitTxn or AbortTxn runs.
func (g *txnGuard) AsyncClose() {
	g.mu.Lock()
	if g.closing {
		g.mu.Unlock()
		return
	}
	g.closing = true
	running := g.ending > 0
	g.mu.Unlock()
	if !running {
		g.AsyncProducer.AsyncClose()
		return
	}
	go func() {
		<-g.idle
		g.AsyncProducer.AsyncClose()
	}()
}

// Close closes the producer once no CommitTxn or AbortTxn runs, and waits
// for it.
func (g *txnGuard) Close() error {
	g.mu.Lock()
	g.closing = true
	running := g.ending > 0
	g.mu.Unlock()
	if running {
		<-g.idle
	}
	return g.AsyncProducer.Close()
}

package capture

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestProducerClosesUnderRunningCommits: a stop while the broker does not
// answer produce requests leaves a CommitTxn running on its goroutine when
// the stream gives up on it (the commit's context ended), then a second
// one (endTxn commits what is open once waiting for the first timed out),
// and the producer is closed under both. sarama must not be closed under a
// running CommitTxn: its input channel closes and the commit that goes on
// panics ("send on closed channel", or "WaitGroup is reused before
// previous Wait has returned"), killing the process.
// TestReadinessFollowsStreamingAndStalls crashed the test binary this way
// about one run in four once exactly-once became the default.
func TestProducerClosesUnderRunningCommits(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	for i := range 2 {
		t.Run(fmt.Sprint(i), func(t *testing.T) { closeUnderRunningCommits(t, e) })
	}
}

func closeUnderRunningCommits(t *testing.T, e *testenv.Env) {
	own := ownBroker(t, e) // the test swallows its produce requests
	cfg := testConfig(own, "unused")
	topic := pipeline.Topic(cfg.TopicPrefix, "public", "orders")
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := pipeline.NewTracker(100)
	tr.HoldUntilReleased()
	p, err := newProducer(cfg, tr, m)
	if err != nil {
		t.Fatal(err)
	}
	p.txn = newTxn(p.ap, cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)), m, tr)
	p.txn.deliveryErr = p.deliveryErr
	go p.ackLoop()
	if err := p.ensureTableTopic(topic); err != nil {
		t.Fatal(err)
	}
	if err := p.ensureTopic(pipeline.CheckpointTopic(cfg.TopicPrefix)); err != nil {
		t.Fatal(err)
	}
	noKeepAlive := func(context.Context) error { return nil }

	var swallow atomic.Bool
	swallow.Store(true)
	cluster := own.Kafka.Cluster()
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if !swallow.Load() {
			cluster.DropControl()
			return nil, nil, false
		}
		cluster.KeepControl()
		return nil, nil, true // no answer: the producer waits
	})
	rec := Record{Topic: topic, Key: []byte(`{"id":1}`), Value: []byte(`{}`)}
	if err := p.send(t.Context(), rec, noKeepAlive, cfg.StatusInterval); err != nil {
		t.Fatal(err)
	}
	commit := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		return p.txn.commit(ctx, noKeepAlive, cfg.StatusInterval)
	}
	if err := commit(); err == nil {
		t.Fatal("the commit went through although the broker swallows produce requests")
	}
	p.txn.waitCommit(100 * time.Millisecond) // as endTxn does, then it commits what is open
	_ = commit()
	closed := make(chan error, 1)
	go func() { closed <- p.close(200*time.Millisecond, 200*time.Millisecond) }()
	time.Sleep(300 * time.Millisecond)
	swallow.Store(false)
	select {
	case err := <-closed:
		t.Logf("close: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the producer did not close")
	}
	time.Sleep(2 * time.Second) // the commits end meanwhile; a panic kills the test binary
}

package sink

import (
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
)

// crashPostgres kills the server with SIGKILL and starts it again. The
// backends are their own process groups (Postgres makes each one a session
// leader), so they outlive the postmaster for a moment and keep its shared
// memory; starting fails until they are gone, hence the retries.
func crashPostgres(t testing.TB, pg *testenv.Postgres) {
	t.Helper()
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	startPostgres(t, pg)
}

// startPostgres starts a killed server, retrying while its old backends
// still hold the shared memory.
func startPostgres(t testing.TB, pg *testenv.Postgres) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := pg.Start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("restart postgres: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// streamWorkload produces the workload in small chunks for about d,
// calling at(i) before chunk i so a test can inject faults mid-stream.
func (h *harness) streamWorkload(w *workload, d time.Duration, at func(chunk int)) {
	h.t.Helper()
	const every = 25 * time.Millisecond
	chunks := int(d / every)
	h.produce(w.snapshot(200))
	for i := range chunks {
		if at != nil {
			at(i)
		}
		var recs []record
		for range 20 {
			recs = append(recs, w.txn()...)
		}
		h.produce(recs)
		time.Sleep(every)
	}
}

// TestRecoversFromRedisAndPostgresRestarts crashes Redis and then the
// inventory Postgres (SIGKILL, restarted at once) while events stream in:
// the sinks must retry on their own and end exactly right.
func TestRecoversFromRedisAndPostgresRestarts(t *testing.T) {
	h := newHarness(t, harnessOptions{ownPostgres: true, items: 1000, onHand: 1000})
	w := newWorkload(seed(t), 1000)
	w.truncates = true
	cfg := h.config(config.SinkInventory, config.SinkRedis)
	cfg.RetryMax = 500 * time.Millisecond
	s := h.start(cfg)

	// While a store is down its sink must commit nothing: the committed
	// offsets a moment after the kill must still be the committed offsets
	// just before the restart.
	redisGroup, invGroup := h.prefix+"-"+config.SinkRedis, h.prefix+"-"+config.SinkInventory
	var stalled int64
	h.streamWorkload(w, 6*time.Second, func(chunk int) {
		var err error
		switch chunk {
		case 40:
			t.Log("Redis: kill -9")
			err = h.rd.Kill()
		case 50:
			stalled = h.committed(redisGroup)
		case 110:
			if c := h.committed(redisGroup); c != stalled {
				t.Errorf("redis sink committed offsets %d -> %d while Redis was down", stalled, c)
			}
			t.Log("Redis: start")
			err = h.rd.Start()
		case 130:
			t.Log("inventory Postgres: kill -9")
			err = h.pg.Kill()
		case 140:
			stalled = h.committed(invGroup)
		case 170:
			if c := h.committed(invGroup); c != stalled {
				t.Errorf("inventory sink committed offsets %d -> %d while Postgres was down", stalled, c)
			}
			t.Log("inventory Postgres: start")
			startPostgres(t, h.pg)
		case 210:
			t.Log("both: kill -9 and restart at once")
			err = h.rd.Restart(true)
			crashPostgres(t, h.pg)
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	h.waitApplied(90*time.Second, h.groups(config.SinkInventory, config.SinkRedis)...)
	h.checkInventory(w)
	h.checkRedis(w, true, true)
	for _, sink := range []string{config.SinkInventory, config.SinkRedis} {
		retries := counter(t, s.reg, "cdcsync_sink_retries_total", map[string]string{"sink": sink, "stage": "apply"})
		t.Logf("%s: %v apply retries", sink, retries)
	}
}

// TestRebalanceKeepsEffectExact runs a second sink process (in-process
// here) that joins both groups mid-stream, then stops the first one: the
// partitions move twice while batches are in flight, and the end state
// must be exact.
func TestRebalanceKeepsEffectExact(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 500, onHand: 100})
	w := newWorkload(seed(t), 500)
	cfg := h.config(config.SinkInventory, config.SinkRedis)
	cfg.BatchSize = 200
	first := h.start(cfg)
	var second *runningSink
	h.streamWorkload(w, 4*time.Second, func(chunk int) {
		switch chunk {
		case 40:
			t.Log("a second sink joins")
			second = h.start(cfg)
		case 100:
			t.Log("the first sink stops")
			first.stop(t)
		}
	})
	h.waitApplied(60*time.Second, h.groups(config.SinkInventory, config.SinkRedis)...)
	h.checkInventory(w)
	h.checkRedis(w, true, true)
	if a := counter(t, second.reg, "cdcsync_sink_events_applied_total", nil); a == 0 {
		t.Error("the second sink applied nothing: no rebalance happened")
	}
}

// TestStartsBeforeTopicAndSurvivesBrokerRestart starts the sinks before
// capture has created the topic, then stops the broker cleanly in the
// middle of the stream and starts it again: the sinks wait and resume on
// their own, ending exact.
func TestStartsBeforeTopicAndSurvivesBrokerRestart(t *testing.T) {
	h := newHarness(t, harnessOptions{ownKafka: true, noTopic: true, items: 300, onHand: 10})
	w := newWorkload(seed(t), 300)
	cfg := h.config(config.SinkInventory, config.SinkRedis)
	cfg.RetryMax = 500 * time.Millisecond
	h.start(cfg)
	time.Sleep(time.Second)
	h.createTopic()
	h.streamWorkload(w, 3*time.Second, func(chunk int) {
		if chunk == 60 {
			t.Log("broker: stop")
			h.kafka.Stop()
			time.Sleep(time.Second)
			t.Log("broker: start")
			if err := h.kafka.Start(); err != nil {
				t.Fatal(err)
			}
			h.connectProducer()
		}
	})
	h.waitApplied(90*time.Second, h.groups(config.SinkInventory, config.SinkRedis)...)
	h.checkInventory(w)
	h.checkRedis(w, true, true)
}

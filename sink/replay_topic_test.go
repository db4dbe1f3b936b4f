package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// progressLog records Replay's progress calls.
type progressLog struct {
	mu          sync.Mutex
	calls       int
	done, total int64
	backwards   bool
}

func (p *progressLog) report(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if done < p.done || (p.calls > 0 && total != p.total) {
		p.backwards = true
	}
	p.calls++
	p.done, p.total = done, total
}

func (h *harness) replay(cfg config.Sink, sink string, from, to Bound) (ReplayStats, *progressLog) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := &progressLog{}
	logger := slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	stats, err := Replay(ctx, cfg, sink, from, to, logger, p.report)
	if err != nil {
		h.t.Fatalf("replay %s from %s to %s: %v", sink, from, to, err)
	}
	h.t.Logf("replay %s: %d messages: %d applied, %d skipped, %d dead-lettered, %d tombstones; %s",
		sink, stats.Messages, stats.Applied, stats.Skipped, stats.DeadLettered, stats.Tombstones, stats.Describe())
	if p.backwards || p.done != stats.Total() || p.total != stats.Total() {
		h.t.Errorf("progress ended at %d/%d (went backwards: %v), want %d/%d", p.done, p.total, p.backwards, stats.Total(), stats.Total())
	}
	return stats, p
}

// TestReplayRebuildsFlushedRedis: the daemon applied a random workload;
// Redis is flushed (row cache and availability cache gone); replaying the
// topic from the beginning into the redis sink rebuilds the row cache
// exactly, and into the inventory sink the availability cache, without
// counting anything twice in the inventory store. The daemon keeps running
// throughout, and its group's offsets are not touched.
func TestReplayRebuildsFlushedRedis(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 300, onHand: 100})
	w := newWorkload(seed(t), 300)
	w.truncates = true
	cfg := h.config(config.SinkInventory, config.SinkRedis)
	cfg.BatchSize = 500
	h.start(cfg)
	both := h.groups(config.SinkInventory, config.SinkRedis)
	recs := w.generate(300, 3000)
	h.produce(recs)
	h.waitApplied(60*time.Second, both...)
	h.checkInventory(w)
	h.checkRedis(w, true, true)
	items := h.items()

	if err := h.rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if n := len(h.rowCache()); n != 0 {
		t.Fatalf("%d rows cached after FLUSHDB", n)
	}

	stats, _ := h.replay(cfg, config.SinkRedis, Beginning(), End())
	if stats.Messages != int64(len(recs)) || stats.Total() != int64(len(recs)) {
		t.Errorf("redis replay read %d messages of %d offsets, want the %d produced", stats.Messages, stats.Total(), len(recs))
	}
	if stats.Applied == 0 || stats.DeadLettered != 0 || stats.Applied+stats.Skipped+stats.DeadLettered+stats.Tombstones != stats.Messages {
		t.Errorf("redis replay stats do not add up: %+v", stats)
	}
	h.checkRedis(w, true, false)

	// The inventory store holds every event already: nothing is applied
	// again, but the items are refreshed in the availability cache.
	stats, _ = h.replay(cfg, config.SinkInventory, Beginning(), End())
	if stats.Applied != 0 || stats.Skipped == 0 {
		t.Errorf("inventory replay applied %d events (skipped %d); want none applied: the store holds them all", stats.Applied, stats.Skipped)
	}
	h.checkInventory(w)
	h.checkRedis(w, true, true)
	if got := h.items(); len(got) != len(items) {
		t.Errorf("inventory_items has %d rows after the replay, %d before", len(got), len(items))
	}

	// The daemon's groups still have the end committed, and keep applying.
	more := w.generate(0, 500)
	h.produce(more)
	h.waitApplied(60*time.Second, both...)
	h.checkInventory(w)
	h.checkRedis(w, true, true)
}

// TestReplayAlongsideDaemon replays both sinks from the beginning while
// the daemon applies new changes: the stores end up exact, and the replay
// applies nothing (the daemon had applied its range already).
func TestReplayAlongsideDaemon(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 200, onHand: 100})
	w := newWorkload(seed(t), 200)
	cfg := h.config(config.SinkInventory, config.SinkRedis)
	cfg.BatchSize = 200
	h.start(cfg)
	both := h.groups(config.SinkInventory, config.SinkRedis)
	h.produce(w.generate(200, 2000))
	h.waitApplied(60*time.Second, both...)

	var wg sync.WaitGroup
	wg.Go(func() {
		for range 10 {
			h.produce(w.generate(0, 200))
		}
	})
	for _, sink := range []string{config.SinkInventory, config.SinkRedis} {
		stats, _ := h.replay(cfg, sink, Beginning(), End())
		if stats.Applied != 0 {
			t.Errorf("%s replay applied %d events the daemon had applied", sink, stats.Applied)
		}
	}
	wg.Wait()
	h.waitApplied(60*time.Second, both...)
	h.checkInventory(w)
	h.checkRedis(w, true, true)
}

// TestReplayRanges: --from a time replays only what was produced since,
// offset bounds are clamped per partition, and a message no sink can parse
// is dead-lettered by the replay as by the daemon.
func TestReplayRanges(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 10, onHand: 100})
	cfg := h.config(config.SinkRedis)
	var first, second []record
	for i := range int64(40) {
		first = append(first, orderRecord(pipeline.OpCreate, at(uint64(100+10*i), uint64(95+10*i)), 1+i, 1+i%10, 1, "created"))
		second = append(second, orderRecord(pipeline.OpCreate, at(uint64(1000+10*i), uint64(995+10*i)), 101+i, 1+i%10, 2, "paid"))
	}
	h.produce(first)
	time.Sleep(20 * time.Millisecond) // record timestamps have millisecond precision
	since := time.Now()
	time.Sleep(20 * time.Millisecond)
	h.produce(second)
	bad := &sarama.ProducerMessage{Topic: h.topic, Key: sarama.StringEncoder(`{"id":999}`), Value: sarama.StringEncoder("not an event")}
	if _, _, err := h.prod.SendMessage(bad); err != nil {
		t.Fatal(err)
	}

	stats, _ := h.replay(cfg, config.SinkRedis, AtTime(since), End())
	if stats.Messages != int64(len(second))+1 || stats.Applied != int64(len(second)) || stats.DeadLettered != 1 {
		t.Errorf("replay since %s: %+v; want the %d records produced since and the bad one dead-lettered", since, stats, len(second))
	}
	if len(stats.DeadLetterTopics) != 1 || stats.DeadLetterTopics[0] != h.topic+".dlq" {
		t.Errorf("dead-letter topics %v", stats.DeadLetterTopics)
	}
	rows := h.rowCache()
	for i := range int64(40) {
		if _, ok := rows["cdc:public.orders:"+strconv.FormatInt(1+i, 10)]; ok {
			t.Errorf("order %d, produced before --from, was replayed", 1+i)
		}
		if r := rows["cdc:public.orders:"+strconv.FormatInt(101+i, 10)]; r["status"] != "paid" {
			t.Errorf("order %d, produced after --from, is cached as %v", 101+i, r)
		}
	}
	dead := h.readAll(h.topic+".dlq", 1, 30*time.Second)
	if len(dead) != 1 || string(dead[0].Value) != "not an event" || headers(dead[0])[pipeline.HeaderDLQSink] != config.SinkRedis {
		t.Errorf("dead letters: %d, want the bad message once", len(dead))
	}

	// Offsets 2 up to 5 of each partition, clamped to what it holds.
	stats, _ = h.replay(cfg, config.SinkRedis, AtOffset(2), AtOffset(5))
	var want int64
	for _, p := range stats.Partitions {
		client, err := sarama.NewClient(h.kafka.Brokers(), testenv.SaramaConfig())
		if err != nil {
			t.Fatal(err)
		}
		end, err := client.GetOffset(p.Topic, p.Partition, sarama.OffsetNewest)
		client.Close()
		if err != nil {
			t.Fatal(err)
		}
		if p.From != min(2, end) || p.To != min(5, end) {
			t.Errorf("partition %d (end %d): range [%d,%d), want [%d,%d)", p.Partition, end, p.From, p.To, min(2, end), min(5, end))
		}
		want += min(5, end) - min(2, end)
	}
	if stats.Messages != want || stats.Applied+stats.Skipped+stats.DeadLettered+stats.AlreadyDeadLettered != want {
		t.Errorf("offsets 2-5: %+v, want %d messages read", stats, want)
	}

	// A time after every record: nothing to do.
	stats, p := h.replay(cfg, config.SinkRedis, AtTime(time.Now().Add(time.Hour)), End())
	if stats.Messages != 0 || stats.Total() != 0 || p.calls != 1 {
		t.Errorf("replay from the future: %+v, %d progress calls", stats, p.calls)
	}
	if got := h.endOffsets(); got != int64(len(first)+len(second)+1) {
		t.Errorf("the replay wrote to the topic: %d records, want %d", got, len(first)+len(second)+1)
	}
}

func TestReplayErrors(t *testing.T) {
	h := newHarness(t, harnessOptions{noTopic: true})
	cfg := h.config(config.SinkRedis)
	ctx := context.Background()
	_, err := Replay(ctx, cfg, "mongo", Beginning(), End(), nil, nil)
	if !errors.Is(err, ErrUnknownSink) {
		t.Errorf("unknown sink: %v", err)
	}
	_, err = Replay(ctx, cfg, config.SinkRedis, Beginning(), End(), nil, nil)
	if !errors.Is(err, ErrNoTopic) {
		t.Errorf("missing topic: %v", err)
	}
	_, err = Replay(ctx, cfg, config.SinkRedis, Bound{}, End(), nil, nil)
	if err == nil {
		t.Error("unset bound: no error")
	}
}

func TestParseBound(t *testing.T) {
	ts := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]Bound{
		"beginning":                 Beginning(),
		"end":                       End(),
		"0":                         AtOffset(0),
		"1234":                      AtOffset(1234),
		"2024-05-01T12:00:00Z":      AtTime(ts),
		"2024-05-01T14:00:00+02:00": AtTime(ts),
	} {
		got, err := ParseBound(in)
		if err != nil || got.kind != want.kind || got.offset != want.offset || !got.at.Equal(want.at) {
			t.Errorf("ParseBound(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "yesterday", "2024-05-01", "12:00", "latest"} {
		if _, err := ParseBound(in); err == nil {
			t.Errorf("ParseBound(%q): no error", in)
		}
	}
	for _, r := range []struct {
		from, to Bound
		empty    bool
	}{
		{AtOffset(3), AtOffset(4), false},
		{AtOffset(4), AtOffset(4), true},
		{AtTime(ts), AtTime(ts.Add(time.Second)), false},
		{AtTime(ts), AtTime(ts), true},
		{Beginning(), AtOffset(0), false}, // the partitions may start later
		{End(), End(), true},
		{AtOffset(5), Beginning(), true},
		{AtOffset(5), AtTime(ts), false},
		{Beginning(), End(), false},
	} {
		if got := EmptyRange(r.from, r.to); got != r.empty {
			t.Errorf("EmptyRange(%s, %s) = %v", r.from, r.to, got)
		}
	}
}

// TestReplayDoesNotDeadLetterTwice: the daemon dead-letters a message it
// cannot parse; a replay of the whole topic afterwards must not write that
// dead letter again (it used to, once per replay), while a bad message
// the daemon never saw is dead-lettered once, by the first replay only.
func TestReplayDoesNotDeadLetterTwice(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 10, onHand: 100})
	cfg := h.config(config.SinkRedis)
	bad := func(id int) {
		m := &sarama.ProducerMessage{Topic: h.topic, Key: sarama.StringEncoder(fmt.Sprintf(`{"id":%d}`, id)), Value: sarama.StringEncoder("not an event")}
		if _, _, err := h.prod.SendMessage(m); err != nil {
			t.Fatal(err)
		}
	}
	h.produce([]record{orderRecord(pipeline.OpCreate, at(100, 95), 1, 1, 1, "created")})
	bad(901)
	s := h.start(cfg)
	h.waitApplied(30*time.Second, h.groups(config.SinkRedis)...)
	s.stop(t)
	if dead := h.readAll(h.topic+".dlq", 1, 30*time.Second); len(dead) != 1 {
		t.Fatalf("the daemon wrote %d dead letters, want 1", len(dead))
	}
	bad(902) // never seen by the daemon

	for i, want := range []struct{ dead, already int64 }{{1, 1}, {0, 2}} {
		stats, _ := h.replay(cfg, config.SinkRedis, Beginning(), End())
		if stats.DeadLettered != want.dead || stats.AlreadyDeadLettered != want.already {
			t.Errorf("replay %d: %d dead-lettered, %d already dead-lettered; want %d and %d", i+1, stats.DeadLettered, stats.AlreadyDeadLettered, want.dead, want.already)
		}
	}
	if dead := h.readAll(h.topic+".dlq", 2, 30*time.Second); len(dead) != 2 {
		t.Errorf("%d dead letters after two replays, want 2 (each bad message once)", len(dead))
	}
}

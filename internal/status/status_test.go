package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env)) }

// fixture is one test's slot, topics and groups on the shared services.
type fixture struct {
	e      *testenv.Env
	db     string
	cfg    config.Status
	orders string // topic of public.orders
	items  string // topic of public.items
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	e := testenv.RequireEnv(t, env)
	f := &fixture{e: e, db: e.PG.CreateDB(t)}
	var cfg config.Status
	if err := config.Defaults(&cfg); err != nil {
		t.Fatal(err)
	}
	cfg.SourceURL = e.PG.URL(f.db)
	cfg.Slot = testenv.RandomName("slot")
	cfg.TopicPrefix = testenv.RandomName("cdc")
	cfg.GroupPrefix = testenv.RandomName("grp")
	cfg.Tables = []string{"public.orders", "public.items"}
	cfg.Kafka.Brokers = e.Kafka.Brokers()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	f.cfg = cfg
	f.orders = cfg.TopicPrefix + ".public.orders"
	f.items = cfg.TopicPrefix + ".public.items"
	return f
}

func (f *fixture) exec(t *testing.T, sql ...string) {
	t.Helper()
	if err := f.e.PG.Exec(context.Background(), f.db, sql...); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) createSlot(t *testing.T) {
	t.Helper()
	f.exec(t, "SELECT pg_create_logical_replication_slot("+quote(f.cfg.Slot)+", 'pgoutput')")
}

// advanceSlot confirms the slot up to the current WAL position, as capture
// does once Kafka has everything.
func (f *fixture) advanceSlot(t *testing.T) {
	t.Helper()
	f.exec(t, "SELECT pg_replication_slot_advance("+quote(f.cfg.Slot)+", pg_current_wal_lsn())")
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func (f *fixture) collector(t *testing.T) *Collector {
	t.Helper()
	c, err := New(context.Background(), f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// produce writes n records to each listed partition of topic.
func (f *fixture) produce(t *testing.T, topic string, n int, partitions ...int32) {
	t.Helper()
	sc := testenv.SaramaConfig()
	sc.Producer.Return.Successes = true
	sc.Producer.Partitioner = sarama.NewManualPartitioner
	p, err := sarama.NewSyncProducer(f.e.Kafka.Brokers(), sc)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, part := range partitions {
		for range n {
			if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: topic, Partition: part, Value: sarama.StringEncoder("x")}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// commit commits offset for group on topic/partition, as a sink does after
// applying a batch. It uses a plain (generation -1) commit, which needs no
// group membership.
func (f *fixture) commit(t *testing.T, group, topic string, partition int32, offset int64) {
	t.Helper()
	client, err := sarama.NewClient(f.e.Kafka.Brokers(), testenv.SaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	coord, err := client.Coordinator(group)
	if err != nil {
		t.Fatal(err)
	}
	req := &sarama.OffsetCommitRequest{Version: 2, ConsumerGroup: group, ConsumerGroupGeneration: -1, RetentionTime: -1}
	req.AddBlock(topic, partition, offset, 0, "")
	resp, err := coord.CommitOffset(req)
	if err != nil {
		t.Fatal(err)
	}
	if kerr := resp.Errors[topic][partition]; !errors.Is(kerr, sarama.ErrNoError) {
		t.Fatalf("commit %s %s/%d: %v", group, topic, partition, kerr)
	}
}

func TestCollect(t *testing.T) {
	f := newFixture(t)
	if err := f.e.Kafka.CreateTopic(f.orders, 2); err != nil {
		t.Fatal(err)
	}
	// public.items' topic is left out: not created yet.
	f.createSlot(t)
	f.exec(t, "CREATE TABLE orders (id bigint PRIMARY KEY)", "INSERT INTO orders SELECT generate_series(1, 1000)")
	f.produce(t, f.orders, 5, 0)
	f.produce(t, f.orders, 3, 1)
	inv, redis := f.cfg.GroupPrefix+"-inventory", f.cfg.GroupPrefix+"-redis"
	f.commit(t, inv, f.orders, 0, 5)
	f.commit(t, inv, f.orders, 1, 1)

	c := f.collector(t)
	r, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !r.Slot.Exists || r.Slot.Active || r.Slot.ActivePID != nil || r.Slot.Name != f.cfg.Slot {
		t.Errorf("slot = %+v", r.Slot)
	}
	if r.Slot.LagBytes <= 0 || r.Slot.ConfirmedLSN == "" || r.Slot.CurrentLSN == "" {
		t.Errorf("after writes the slot should lag: %+v", r.Slot)
	}
	if len(r.Topics) != 2 || r.Topics[0].Name != f.orders || !r.Topics[0].Exists || r.Topics[1].Exists {
		t.Fatalf("topics = %+v", r.Topics)
	}
	want := []Partition{{0, 0, 5}, {1, 0, 3}}
	if got := r.Topics[0].Partitions; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("partitions = %+v, want %+v", got, want)
	}
	if r.Topics[0].Records() != 8 || r.Topics[0].End() != 8 {
		t.Errorf("records %d, end %d", r.Topics[0].Records(), r.Topics[0].End())
	}
	if len(r.Sinks) != 2 {
		t.Fatalf("sinks = %+v", r.Sinks)
	}
	s := r.Sinks[0]
	if s.Name != "inventory" || s.Group != inv || s.Lag != 2 || len(s.Partitions) != 2 {
		t.Errorf("inventory sink = %+v", s)
	} else if p := s.Partitions[1]; p.Committed == nil || *p.Committed != 1 || p.End != 3 || p.Lag != 2 {
		t.Errorf("inventory partition 1 = %+v", p)
	}
	// The redis sink's group committed nothing: it lags by everything.
	s = r.Sinks[1]
	if s.Name != "redis" || s.Group != redis || s.Lag != 8 || len(s.Partitions) != 2 || s.Partitions[0].Committed != nil {
		t.Errorf("redis sink = %+v", s)
	}
	if r.CaughtUp() {
		t.Error("CaughtUp with lag")
	}

	// Everything confirmed and committed: caught up.
	f.advanceSlot(t)
	f.commit(t, inv, f.orders, 1, 3)
	f.commit(t, redis, f.orders, 0, 5)
	f.commit(t, redis, f.orders, 1, 3)
	r, err = c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Slot.LagBytes != 0 || r.Sinks[0].Lag != 0 || r.Sinks[1].Lag != 0 || !r.CaughtUp() {
		t.Errorf("after catching up: slot lag %d, sinks %+v", r.Slot.LagBytes, r.Sinks)
	}

	// Text and JSON forms.
	var buf bytes.Buffer
	if err := WriteText(&buf, r); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{f.cfg.Slot, "no", f.orders, "(does not exist)", inv, redis,
		"sink inventory: 0 records behind"} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil || back.Slot.Name != f.cfg.Slot || len(back.Sinks) != 2 {
		t.Errorf("JSON round trip: %v %s", err, js)
	}
}

func TestCollectWithoutSlot(t *testing.T) {
	f := newFixture(t)
	r, err := f.collector(t).Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Slot.Exists || r.CaughtUp() || r.Slot.CurrentLSN == "" {
		t.Errorf("slot = %+v", r.Slot)
	}
	var buf bytes.Buffer
	if err := WriteText(&buf, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "(does not exist)") {
		t.Errorf("text:\n%s", buf.String())
	}
}

func TestWaitCaughtUp(t *testing.T) {
	f := newFixture(t)
	if err := f.e.Kafka.CreateTopic(f.orders, 2); err != nil {
		t.Fatal(err)
	}
	if err := f.e.Kafka.CreateTopic(f.items, 1); err != nil {
		t.Fatal(err)
	}
	f.createSlot(t)
	f.exec(t, "CREATE TABLE orders (id bigint PRIMARY KEY)", "INSERT INTO orders SELECT generate_series(1, 100)")
	c := f.collector(t)
	inv, redis := f.cfg.GroupPrefix+"-inventory", f.cfg.GroupPrefix+"-redis"

	// Nothing moves: the wait times out and says what is left.
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	err := c.WaitCaughtUp(ctx, 50*time.Millisecond, nil)
	cancel()
	if !errors.Is(err, ErrNotCaughtUp) || !strings.Contains(err.Error(), "bytes behind") {
		t.Fatalf("stuck slot: %v", err)
	}

	// Play capture and the sinks while WaitCaughtUp runs.
	done := make(chan error, 1)
	var polls []Progress
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- c.WaitCaughtUp(ctx, 50*time.Millisecond, func(p Progress) { polls = append(polls, p) })
	}()
	time.Sleep(200 * time.Millisecond)
	f.produce(t, f.orders, 4, 0, 1)
	f.produce(t, f.items, 2, 0)
	f.advanceSlot(t)
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("returned before the sinks committed: %v", err)
	default:
	}
	f.commit(t, inv, f.orders, 0, 4)
	f.commit(t, inv, f.orders, 1, 4)
	f.commit(t, redis, f.orders, 0, 4)
	f.commit(t, redis, f.orders, 1, 4)
	f.commit(t, redis, f.items, 0, 2)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(polls) < 2 || polls[0].SlotBytes == 0 || polls[len(polls)-1].SinkLag == nil {
		t.Errorf("progress reports: %+v", polls)
	}
	if last := polls[len(polls)-1]; last.String() != "sink inventory 0 records behind, sink redis 0 records behind" {
		t.Errorf("last progress %q", last)
	}

	// A record on Kafka before the call that a sink has not committed is
	// waited for.
	f.produce(t, f.orders, 1, 0)
	ctx, cancel = context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	f.exec(t, "INSERT INTO orders VALUES (1000)")
	f.advanceSlot(t)
	err = c.WaitCaughtUp(ctx, 50*time.Millisecond, nil)
	if !errors.Is(err, ErrNotCaughtUp) || !strings.Contains(err.Error(), "sink inventory 1 records behind, sink redis 1 records behind") {
		t.Errorf("uncommitted record: %v", err)
	}
}

func TestWaitWithoutSlot(t *testing.T) {
	f := newFixture(t)
	err := f.collector(t).WaitCaughtUp(context.Background(), 10*time.Millisecond, nil)
	if !errors.Is(err, ErrNoSlot) {
		t.Errorf("got %v, want ErrNoSlot", err)
	}
}

func TestUnreachableBroker(t *testing.T) {
	f := newFixture(t)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	f.cfg.Kafka.Brokers = []string{"127.0.0.1:" + itoa(port)}
	if _, err := New(context.Background(), f.cfg); err == nil {
		t.Error("connected to a closed port")
	}
}

func TestUnreachableDatabase(t *testing.T) {
	f := newFixture(t)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	f.cfg.SourceURL = "postgres://postgres@127.0.0.1:" + itoa(port) + "/x?sslmode=disable&connect_timeout=2"
	c := f.collector(t)
	if _, err := c.Collect(context.Background()); err == nil || !strings.Contains(err.Error(), "replication slot") {
		t.Errorf("got %v", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 20 << 20: "20.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

package sink

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env)) }

// harness is one test's world: an inventory database, a Redis, a topic with
// a random prefix on the shared broker, and a producer writing to it as
// capture would.
type harness struct {
	t      testing.TB
	pg     *testenv.Postgres
	db     string
	rd     *testenv.Redis
	kafka  *testenv.Kafka
	prefix string
	topic  string
	prod   sarama.SyncProducer
	rdb    *redis.Client
}

type harnessOptions struct {
	ownPostgres bool // start a Postgres the test may kill
	ownKafka    bool // start a broker the test may stop
	noTopic     bool // leave creating the topic to the test
	items       int64
	onHand      int64
}

func newHarness(t testing.TB, opts harnessOptions) *harness {
	t.Helper()
	e := testenv.RequireEnv(t, env)
	h := &harness{t: t, pg: e.PG, kafka: e.Kafka, prefix: testenv.RandomName("t")}
	if opts.ownPostgres {
		pg, err := testenv.StartPostgres()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pg.Close)
		h.pg = pg
	}
	if opts.ownKafka {
		k, err := testenv.StartKafka()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Close)
		h.kafka = k
	}
	h.db = h.pg.CreateDB(t)
	// Each test has its own Redis: the availability keys are global names.
	rd, err := testenv.StartRedis()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rd.Close)
	h.rd = rd
	h.rdb = redis.NewClient(&redis.Options{Addr: rd.Addr()})
	t.Cleanup(func() { h.rdb.Close() })

	h.topic = pipeline.Topic(h.prefix, "public", "orders")
	if !opts.noTopic {
		h.createTopic()
	}
	h.connectProducer()

	// The warehouse's stock: the sink never writes on_hand.
	if opts.items > 0 {
		h.exec(`CREATE TABLE inventory_items (item_id bigint PRIMARY KEY, on_hand bigint NOT NULL DEFAULT 0,
			reserved bigint NOT NULL DEFAULT 0, shipped bigint NOT NULL DEFAULT 0)`,
			fmt.Sprintf(`INSERT INTO inventory_items (item_id, on_hand) SELECT g, %d FROM generate_series(1, %d) g`, opts.onHand, opts.items))
	}
	return h
}

func (h *harness) createTopic() {
	h.t.Helper()
	if err := h.kafka.CreateTopic(h.topic, 4); err != nil {
		h.t.Fatal(err)
	}
}

// connectProducer (re)connects the producer, as capture would after a
// broker restart.
func (h *harness) connectProducer() {
	t := h.t
	t.Helper()
	if h.prod != nil {
		h.prod.Close()
	}
	sc := testenv.SaramaConfig()
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1
	sc.Producer.Partitioner = sarama.NewHashPartitioner
	prod, err := sarama.NewSyncProducer(h.kafka.Brokers(), sc)
	if err != nil {
		t.Fatal(err)
	}
	if h.prod == nil {
		t.Cleanup(func() { h.prod.Close() })
	}
	h.prod = prod
}

func (h *harness) exec(sql ...string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.pg.Exec(ctx, h.db, sql...); err != nil {
		h.t.Fatal(err)
	}
}

// config is the sink configuration with DESIGN.md's defaults, pointed at
// the harness's services.
func (h *harness) config(sinks ...string) config.Sink {
	return config.Sink{
		Sinks:           sinks,
		InventoryURL:    h.pg.URL(h.db),
		RedisURL:        h.rd.URL(),
		Tables:          []string{"public.orders"},
		TopicPrefix:     h.prefix,
		GroupPrefix:     h.prefix,
		BatchSize:       2000,
		BatchTimeout:    20 * time.Millisecond,
		DLQSuffix:       ".dlq",
		RetryMax:        time.Second,
		ShutdownTimeout: 5 * time.Second,
		Inventory: config.Inventory{
			OrdersTable: "public.orders", OrderIDColumn: "id", ItemColumn: "item_id", QuantityColumn: "quantity",
			StatusColumn: "status", ReservedStatuses: []string{"created", "paid"}, ShippedStatuses: []string{"shipped"},
		},
		Kafka: config.Kafka{Brokers: h.kafka.Brokers(), Version: "3.6.0", ClientID: "cdcsync-sink-test"},
		HTTP:  config.HTTP{Addr: ""},
		Log:   config.Log{Format: "text", Level: "info"},
	}
}

// runningSink is sink.Run in a goroutine.
type runningSink struct {
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

// start runs the sinks in-process until the test ends or stop is called.
func (h *harness) start(cfg config.Sink) *runningSink {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &runningSink{reg: prometheus.NewRegistry(), cancel: cancel, done: make(chan error, 1)}
	logger := slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	go func() { s.done <- Run(ctx, cfg, logger, s.reg) }()
	h.t.Cleanup(func() { s.stop(h.t) })
	return s
}

// stop cancels Run (as SIGTERM does) and wants a clean nil return.
func (s *runningSink) stop(t testing.TB) {
	t.Helper()
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("sink.Run returned %v after cancel, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("sink.Run did not return within 30s of cancel")
	}
}

// testWriter sends log lines to the test log, shown on failure or -v.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// produce writes records to the harness topic in order, partitioned by key
// hash as capture does (a nil key, a truncate, lands on a random partition).
func (h *harness) produce(recs []record) {
	h.t.Helper()
	h.produceTo(h.topic, recs)
}

func (h *harness) produceTo(topic string, recs []record) {
	h.t.Helper()
	for len(recs) > 0 {
		n := min(len(recs), 1000)
		msgs := make([]*sarama.ProducerMessage, n)
		for i, r := range recs[:n] {
			m := &sarama.ProducerMessage{Topic: topic, Headers: []sarama.RecordHeader{
				{Key: []byte(pipeline.HeaderPosition), Value: []byte(r.pos.String())},
				{Key: []byte(pipeline.HeaderOp), Value: []byte(r.op)},
			}}
			if r.key != nil {
				m.Key = sarama.ByteEncoder(r.key)
			}
			if r.value != nil {
				m.Value = sarama.ByteEncoder(r.value)
			}
			msgs[i] = m
		}
		if err := h.prod.SendMessages(msgs); err != nil {
			h.t.Fatalf("produce: %v", err)
		}
		recs = recs[n:]
	}
}

// waitApplied waits until every group has committed the end of every
// partition of the harness topic: the sinks say everything is applied.
func (h *harness) waitApplied(timeout time.Duration, groups ...string) {
	h.t.Helper()
	client, err := sarama.NewClient(h.kafka.Brokers(), testenv.SaramaConfig())
	if err != nil {
		h.t.Fatal(err)
	}
	defer client.Close()
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		h.t.Fatal(err)
	}
	parts, err := client.Partitions(h.topic)
	if err != nil {
		h.t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	var last string
	for {
		done := true
		var status []string
		for _, g := range groups {
			resp, err := admin.ListConsumerGroupOffsets(g, map[string][]int32{h.topic: parts})
			if err != nil {
				done = false
				status = append(status, g+": "+err.Error())
				continue
			}
			for _, p := range parts {
				end, err := client.GetOffset(h.topic, p, sarama.OffsetNewest)
				if err != nil {
					h.t.Fatal(err)
				}
				var committed int64 = -1
				if b := resp.GetBlock(h.topic, p); b != nil {
					committed = b.Offset
				}
				if committed != end && end > 0 {
					done = false
					status = append(status, fmt.Sprintf("%s p%d committed %d of %d", g, p, committed, end))
				}
			}
		}
		if done {
			return
		}
		last = strings.Join(status, "; ")
		if time.Now().After(deadline) {
			h.t.Fatalf("sinks did not commit the end of %s within %s: %s", h.topic, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (h *harness) groups(sinks ...string) []string {
	out := make([]string, len(sinks))
	for i, s := range sinks {
		out[i] = h.prefix + "-" + s
	}
	return out
}

// items reads inventory_items: item -> on_hand, reserved, shipped.
func (h *harness) items() map[int64][3]int64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, h.pg.URL(h.db))
	if err != nil {
		h.t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT item_id, on_hand, reserved, shipped FROM inventory_items`)
	out := map[int64][3]int64{}
	var id int64
	var v [3]int64
	if _, err := pgx.ForEachRow(rows, []any{&id, &v[0], &v[1], &v[2]}, func() error { out[id] = v; return nil }); err != nil {
		h.t.Fatal(err)
	}
	return out
}

// checkInventory compares reserved and shipped of every item with the
// model: DESIGN.md's invariant, exactly.
func (h *harness) checkInventory(w *workload) {
	h.t.Helper()
	got := h.items()
	want := w.expectedCounters()
	var bad []string
	for _, item := range slices.Sorted(maps.Keys(union(got, want))) {
		g, wv := got[item], want[item]
		if g[1] != wv[0] || g[2] != wv[1] {
			bad = append(bad, fmt.Sprintf("item %d: reserved %d shipped %d, want %d %d", item, g[1], g[2], wv[0], wv[1]))
		}
	}
	if len(bad) > 0 {
		h.t.Fatalf("inventory differs from the orders in %d items: %s", len(bad), strings.Join(bad[:min(len(bad), 10)], "; "))
	}
}

func union[V1, V2 any](a map[int64]V1, b map[int64]V2) map[int64]bool {
	out := map[int64]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// rowCache reads every row of public.orders from the Redis row cache.
func (h *harness) rowCache() map[string]map[string]string {
	h.t.Helper()
	ctx := context.Background()
	out := map[string]map[string]string{}
	iter := h.rdb.Scan(ctx, 0, "cdc:public.orders:*", 1000).Iterator()
	for iter.Next(ctx) {
		v, err := h.rdb.HGetAll(ctx, iter.Val()).Result()
		if err != nil {
			h.t.Fatal(err)
		}
		out[iter.Val()] = v
	}
	if err := iter.Err(); err != nil {
		h.t.Fatal(err)
	}
	return out
}

// checkRedis compares the row cache with the model's orders and the
// availability cache with the inventory store.
func (h *harness) checkRedis(w *workload, rows, availability bool) {
	h.t.Helper()
	if rows {
		got, want := h.rowCache(), w.expectedRows()
		var bad []string
		for k, wv := range want {
			if gv, ok := got[k]; !ok {
				bad = append(bad, k+" missing")
			} else if !maps.Equal(gv, wv) {
				bad = append(bad, fmt.Sprintf("%s = %v, want %v", k, gv, wv))
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				bad = append(bad, k+" should not exist")
			}
		}
		if len(bad) > 0 {
			slices.Sort(bad)
			h.t.Fatalf("row cache differs from the orders in %d rows: %s", len(bad), strings.Join(bad[:min(len(bad), 10)], "; "))
		}
	}
	if availability {
		if bad := h.availabilityDiff(w); len(bad) > 0 {
			h.t.Fatalf("availability cache wrong for %d items: %s", len(bad), strings.Join(bad[:min(len(bad), 10)], "; "))
		}
	}
}

// availabilityDiff compares the availability cache of every item the
// workload touched with the inventory store.
func (h *harness) availabilityDiff(w *workload) []string {
	h.t.Helper()
	items := h.items()
	var bad []string
	for item := range w.touched {
		v := items[item]
		want := v[0] - v[1] - v[2]
		got, err := h.rdb.Get(context.Background(), AvailabilityKey(item)).Result()
		if err != nil || got != strconv.FormatInt(want, 10) {
			bad = append(bad, fmt.Sprintf("item %d: %q (%v), want %d", item, got, err, want))
		}
	}
	return bad
}

// counter sums a counter's series whose labels include the given ones.
func counter(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// generate runs the workload for n source transactions after a snapshot
// of snap orders.
func (w *workload) generate(snap, n int) []record {
	recs := w.snapshot(snap)
	for range n {
		recs = append(recs, w.txn()...)
	}
	return recs
}

package sink

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestMalformedMessagesGoToDeadLetters produces messages no sink can apply
// (not JSON, an unknown op, a create without after, a row event without a
// key) and one only the inventory sink cannot (a quantity that is not a
// number), each followed by valid events on the same key and partition.
// Each sink must dead-letter exactly its unappliable messages with the
// reason and origin in headers, and apply everything after them.
func TestMalformedMessagesGoToDeadLetters(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 10, onHand: 20})
	both := h.groups(config.SinkInventory, config.SinkRedis)
	h.start(h.config(config.SinkInventory, config.SinkRedis))

	bad := []struct {
		key, value    string
		inventoryOnly bool
		reason        string
	}{
		{key: `{"id":901}`, value: `this is not JSON`, reason: "decode event"},
		{key: `{"id":902}`, value: `{"before":null,"after":{"id":902},"source":{"schema":"public","table":"orders"},"op":"x"}`, reason: `unknown op "x"`},
		{key: `{"id":903}`, value: `{"before":null,"after":null,"source":{"schema":"public","table":"orders"},"op":"c"}`, reason: "without after"},
		{key: ``, value: string(orderRecord(pipeline.OpCreate, at(10, 5), 904, 1, 1, "created").value), reason: "without a key"},
		{key: `{"id":905}`, value: strings.Replace(string(orderRecord(pipeline.OpCreate, at(10, 6), 905, 1, 1, "created").value), `"quantity":1`, `"quantity":"lots"`, 1), inventoryOnly: true, reason: "not an integer"},
		// Postgres refuses NUL in text; the batch is then applied message
		// by message to find it. (Its key has no later event in the batch:
		// a later full image would supersede it before it reached Postgres.)
		{key: `{"id":908}`, value: strings.Replace(string(orderRecord(pipeline.OpCreate, at(10, 7), 908, 1, 1, "created").value), `"created"`, `"created\u0000"`, 1), inventoryOnly: true, reason: "22021"},
	}
	var msgs []*sarama.ProducerMessage
	for _, b := range bad {
		m := &sarama.ProducerMessage{Topic: h.topic, Value: sarama.StringEncoder(b.value)}
		if b.key != "" {
			m.Key = sarama.StringEncoder(b.key)
		}
		msgs = append(msgs, m)
	}
	if err := h.prod.SendMessages(msgs); err != nil {
		t.Fatal(err)
	}
	// Valid events after them, on the same keys.
	var good []record
	for i, id := range []int64{901, 902, 903, 904, 905, 906} {
		good = append(good, orderRecord(pipeline.OpCreate, at(uint64(100+10*i), uint64(95+10*i)), id, 2, 3, "paid"))
	}
	h.produce(good)
	h.waitApplied(30*time.Second, both...)

	// Dead letters, by sink and original offset.
	dead := h.readAll(h.topic+".dlq", 10, 30*time.Second)
	got := map[string]*sarama.ConsumerMessage{}
	for _, d := range dead {
		hd := headers(d)
		if hd[pipeline.HeaderDLQTopic] != h.topic {
			t.Errorf("dead letter with topic header %q, want %q", hd[pipeline.HeaderDLQTopic], h.topic)
		}
		got[hd[pipeline.HeaderDLQSink]+"/"+hd[pipeline.HeaderDLQPartition]+"/"+hd[pipeline.HeaderDLQOffset]] = d
	}
	for i, b := range bad {
		for _, sink := range []string{config.SinkInventory, config.SinkRedis} {
			k := fmt.Sprintf("%s/%d/%d", sink, msgs[i].Partition, msgs[i].Offset)
			d, ok := got[k]
			if b.inventoryOnly && sink == config.SinkRedis {
				if ok {
					t.Errorf("%s sink dead-lettered %q, which it can apply", sink, b.value)
				}
				continue
			}
			if !ok {
				t.Errorf("no dead letter from the %s sink for %q (partition %d offset %d)", sink, b.value, msgs[i].Partition, msgs[i].Offset)
				continue
			}
			if reason := headers(d)[pipeline.HeaderDLQError]; !strings.Contains(reason, b.reason) {
				t.Errorf("%s dead letter of %q: error header %q, want it to mention %q", sink, b.value, reason, b.reason)
			}
			if string(d.Value) != b.value || string(d.Key) != b.key {
				t.Errorf("%s dead letter carries key %q value %q, want the original %q %q", sink, d.Key, d.Value, b.key, b.value)
			}
		}
	}
	if len(dead) != 10 {
		t.Errorf("%d dead letters, want 10", len(dead))
	}

	// Everything after the bad messages was applied: 6 orders of 3 paid;
	// nothing of the bad ones counts for the inventory.
	if it := h.items()[2]; it[1] != 18 {
		t.Errorf("item 2 reserved %d, want 18", it[1])
	}
	if it := h.items()[1]; it[1] != 0 {
		t.Errorf("item 1 reserved %d, want 0", it[1])
	}
	rows := h.rowCache()
	for _, id := range []int64{901, 902, 903, 904, 905, 906} {
		if r := rows["cdc:public.orders:"+strconv.FormatInt(id, 10)]; r["status"] != "paid" {
			t.Errorf("order %d in the row cache: %v", id, r)
		}
	}
}

func headers(m *sarama.ConsumerMessage) map[string]string {
	out := map[string]string{}
	for _, h := range m.Headers {
		out[string(h.Key)] = string(h.Value)
	}
	return out
}

// readAll reads every partition of topic from the start until it has want
// messages (or timeout), then a little longer to catch extras.
func (h *harness) readAll(topic string, want int, timeout time.Duration) []*sarama.ConsumerMessage {
	h.t.Helper()
	c, err := sarama.NewConsumer(h.kafka.Brokers(), testenv.SaramaConfig())
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var parts []int32
	for ctx.Err() == nil {
		if parts, err = c.Partitions(topic); err == nil && len(parts) > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	out := make(chan *sarama.ConsumerMessage, 1000)
	for _, p := range parts {
		pc, err := c.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			h.t.Fatal(err)
		}
		defer pc.Close()
		go func() {
			for m := range pc.Messages() {
				out <- m
			}
		}()
	}
	var msgs []*sarama.ConsumerMessage
	for len(msgs) < want {
		select {
		case m := <-out:
			msgs = append(msgs, m)
		case <-ctx.Done():
			return msgs
		}
	}
	extra := time.After(300 * time.Millisecond)
	for {
		select {
		case m := <-out:
			msgs = append(msgs, m)
		case <-extra:
			return msgs
		}
	}
}

// TestEventsWithoutPositionGoToDeadLetters produces two creates of one
// order that carry no position (commit_lsn 0, as a foreign producer might
// write them), and two whose op is long multibyte text: no sink may apply
// the first two (the inventory sink used to skip them as stale, the Redis
// sink to apply the first), all four go to the dead-letter topic from
// both sinks, and the error header, cut to its limit, stays valid UTF-8.
func TestEventsWithoutPositionGoToDeadLetters(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 10, onHand: 20})
	both := h.groups(config.SinkInventory, config.SinkRedis)
	h.start(h.config(config.SinkInventory, config.SinkRedis))

	unpositioned := []record{
		orderRecord(pipeline.OpCreate, pipeline.Position{}, 950, 3, 2, "created"),
		orderRecord(pipeline.OpCreate, pipeline.Position{}, 950, 3, 4, "paid"),
	}
	// Two lengths of ASCII before the two-byte characters: the cut at
	// the header's limit lands inside a character in one of them.
	longOps := map[string]bool{}
	h.produce(unpositioned)
	for _, prefix := range []string{"x", "xy"} {
		v := strings.Replace(string(orderRecord(pipeline.OpCreate, at(10, 5), 951, 3, 1, "created").value),
			`"op":"c"`, `"op":"`+prefix+strings.Repeat("é", 600)+`"`, 1)
		longOps[v] = true
		h.produce([]record{{key: keyJSON(951), value: []byte(v), pos: at(10, 5), op: "x"}})
	}
	h.produce([]record{orderRecord(pipeline.OpCreate, at(20, 15), 952, 4, 1, "created")})
	h.waitApplied(30*time.Second, both...)

	dead := h.readAll(h.topic+".dlq", 8, 30*time.Second)
	if len(dead) != 8 {
		t.Errorf("%d dead letters, want 8 (4 messages from each sink)", len(dead))
	}
	for _, d := range dead {
		reason := headers(d)[pipeline.HeaderDLQError]
		if !utf8.ValidString(reason) {
			t.Errorf("error header is not valid UTF-8 (%d bytes, ends %q)", len(reason), reason[max(0, len(reason)-6):])
		}
		if !longOps[string(d.Value)] && !strings.Contains(reason, "without a position") {
			t.Errorf("dead letter %s: error header %q, want it to say the position is missing", d.Value, reason)
		}
	}
	if it := h.items()[3]; it[1] != 0 {
		t.Errorf("item 3 reserved %d, want 0: an event without a position was applied", it[1])
	}
	if it := h.items()[4]; it[1] != 1 {
		t.Errorf("item 4 reserved %d, want 1 (order 952)", it[1])
	}
	rows := h.rowCache()
	if r, ok := rows["cdc:public.orders:950"]; ok {
		t.Errorf("order 950 in the row cache: %v; an event without a position was applied", r)
	}
	if rows["cdc:public.orders:952"]["status"] != "created" {
		t.Errorf("order 952 in the row cache: %v", rows["cdc:public.orders:952"])
	}
}

// TestDeadLettersNearTheSizeLimit dead-letters two messages the brokers
// accept but no sink can apply: one just under capture's default
// 1,000,000-byte limit, which with the reason headers used to exceed the
// dead-letter producer's (sarama's 1,000,000-byte default) so that its
// partition retried forever, and one so large that even the dead-letter
// limit cannot hold it with headers: it goes without its value, with a
// header saying so.
func TestDeadLettersNearTheSizeLimit(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	h.start(h.config(config.SinkRedis))

	sc := testenv.SaramaConfig()
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.MaxMessageBytes = 2 << 20
	prod, err := sarama.NewSyncProducer(h.kafka.Brokers(), sc)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	sizes := []int{999_800, 1_048_300}
	for _, n := range sizes {
		value := "not JSON " + strings.Repeat("a", n-len("not JSON "))
		if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: h.topic, Key: sarama.StringEncoder(`{"id":1}`), Value: sarama.StringEncoder(value)}); err != nil {
			t.Fatalf("produce %d bytes: %v", n, err)
		}
	}
	h.waitApplied(60*time.Second, h.groups(config.SinkRedis)...)

	dead := h.readAll(h.topic+".dlq", 2, 30*time.Second)
	if len(dead) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dead))
	}
	slices.SortFunc(dead, func(a, b *sarama.ConsumerMessage) int {
		return len(headers(a)[pipeline.HeaderDLQOmitted]) - len(headers(b)[pipeline.HeaderDLQOmitted])
	})
	if hd := headers(dead[0]); len(dead[0].Value) != sizes[0] || hd[pipeline.HeaderDLQOmitted] != "" || !strings.Contains(hd[pipeline.HeaderDLQError], "decode event") {
		t.Errorf("first dead letter: %d-byte value, headers %v; want the whole %d-byte message", len(dead[0].Value), trimHeaders(hd), sizes[0])
	}
	hd := headers(dead[1])
	if dead[1].Value != nil || !strings.Contains(hd[pipeline.HeaderDLQOmitted], "value (1048300 bytes)") || hd[pipeline.HeaderDLQOffset] == "" {
		t.Errorf("second dead letter: %d-byte value, headers %v; want no value, the omission and the origin in headers", len(dead[1].Value), trimHeaders(hd))
	}
}

// trimHeaders shortens header values for a readable failure message.
func trimHeaders(hd map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range hd {
		out[k] = v[:min(len(v), 120)]
	}
	return out
}

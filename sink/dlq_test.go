package sink

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

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
		key, value               string
		inventoryOnly, redisOnly bool
		reason                   string
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
		// Someone else's hash sits where the row's version belongs: the
		// script's GET on it fails.
		{key: `{"id":907}`, value: string(orderRecord(pipeline.OpCreate, at(10, 8), 907, 1, 1, "created").value), redisOnly: true, reason: "WRONGTYPE"},
	}
	if err := h.rdb.HSet(context.Background(), "cdcver:public.orders:907", "not", "a version").Err(); err != nil {
		t.Fatal(err)
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
	dead := h.readAll(h.topic+".dlq", 11, 30*time.Second)
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
			if (b.inventoryOnly && sink == config.SinkRedis) || (b.redisOnly && sink == config.SinkInventory) {
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
	if len(dead) != 11 {
		t.Errorf("%d dead letters, want 11", len(dead))
	}

	// Everything after the bad messages was applied: 6 orders of 3 paid,
	// and order 907 for the inventory.
	if it := h.items()[2]; it[1] != 18 {
		t.Errorf("item 2 reserved %d, want 18", it[1])
	}
	if it := h.items()[1]; it[1] != 1 {
		t.Errorf("item 1 reserved %d, want 1 (order 907)", it[1])
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

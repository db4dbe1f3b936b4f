package status

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestCollectDelivery: without a checkpoint for the slot capture runs at
// least once; with one (exactly-once delivery), status reports its LSN.
// A checkpoint of another slot on the same topic is not the slot's.
func TestCollectDelivery(t *testing.T) {
	f := newFixture(t)
	c := f.collector(t)
	r, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Delivery.Mode != "at-least-once" || r.Delivery.CheckpointLSN != "" {
		t.Fatalf("without a checkpoint topic: %+v", r.Delivery)
	}

	topic := pipeline.CheckpointTopic(f.cfg.TopicPrefix)
	if err := f.e.Kafka.CreateTopic(topic, 1); err != nil {
		t.Fatal(err)
	}
	sc := testenv.SaramaConfig()
	sc.Producer.Return.Successes = true
	p, err := sarama.NewSyncProducer(f.e.Kafka.Brokers(), sc)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, cp := range []pipeline.Checkpoint{
		{Slot: f.cfg.Slot, Epoch: 0, LSN: 0x16B3700},
		{Slot: f.cfg.Slot, Epoch: 0, LSN: 0x16B3748},
		{Slot: "other_slot", Epoch: 0, LSN: 0x2000000},
	} {
		v, err := cp.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := p.SendMessage(&sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(cp.Slot), Value: sarama.ByteEncoder(v)}); err != nil {
			t.Fatal(err)
		}
	}
	r, err = c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Delivery.Mode != "exactly-once" || r.Delivery.CheckpointLSN != "0/16B3748" {
		t.Fatalf("with checkpoints: %+v, want exactly-once at 0/16B3748", r.Delivery)
	}
	var buf bytes.Buffer
	if err := WriteText(&buf, r); err != nil {
		t.Fatal(err)
	}
	if want := "DELIVERY: exactly-once; checkpoint 0/16B3748"; !strings.Contains(buf.String(), want) {
		t.Fatalf("text lacks %q:\n%s", want, buf.String())
	}
}

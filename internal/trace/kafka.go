package trace

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/internal/kafkaclient"
	"github.com/cdcsync/cdcsync/pipeline"
	"github.com/cdcsync/cdcsync/pipeline/debezium"
	"github.com/cdcsync/cdcsync/sink"
)

// keyFromArgument builds the Kafka key and the cache key of a row that is
// not in the source (any more) from the --key argument, its columns in
// key order.
func keyFromArgument(schema, table string, keyCols []string, key map[string]json.RawMessage) ([]byte, string) {
	row := make(pipeline.Row, 0, len(keyCols))
	for _, c := range keyCols {
		var buf bytes.Buffer
		v := key[c]
		if err := json.Compact(&buf, v); err == nil {
			v = buf.Bytes()
		}
		row = append(row, pipeline.Column{Name: c, Value: v})
	}
	return row.AppendJSON(nil), sink.RowKey(schema, table, row)
}

// readKafka reads the partition the row's key hashes to (capture uses
// sarama's hash partitioner) from its start to its end, and keeps the
// row's records.
func (t *tracer) readKafka(ctx context.Context, r *Report) error {
	topic := pipeline.Topic(t.cfg.TopicPrefix, t.schema, t.table)
	r.Kafka = Kafka{Topic: topic, Records: []Record{}}
	sc, err := kafkaclient.Config(t.cfg.Kafka)
	if err != nil {
		return err
	}
	sc.Consumer.IsolationLevel = sarama.ReadCommitted
	sc.Consumer.Return.Errors = true
	client, err := kafkaclient.NewClient(t.cfg.Kafka, sc)
	if err != nil {
		return err
	}
	defer client.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		return fmt.Errorf("partitions of %s: %w", topic, err)
	}
	p, err := sarama.NewHashPartitioner(topic).Partition(&sarama.ProducerMessage{Key: sarama.ByteEncoder(t.kafkaKey)}, int32(len(parts)))
	if err != nil {
		return fmt.Errorf("partition of the key: %w", err)
	}
	r.Kafka.Partition = p
	if err := t.readPartition(ctx, client, topic, p, r); err != nil {
		return err
	}
	if len(r.Kafka.Records) > 0 {
		return nil
	}
	// Nothing there: with CDCSYNC_ENCODING=debezium the key bytes (and so
	// the partition) are not cdcsync's, so look at the other partitions.
	for _, other := range parts {
		if other == p {
			continue
		}
		if err := t.readPartition(ctx, client, topic, other, r); err != nil {
			return err
		}
		if len(r.Kafka.Records) > 0 {
			r.Kafka.Partition = other
			return nil
		}
	}
	return nil
}

// readPartition reads partition p of topic from its start to its end and
// keeps the row's records.
func (t *tracer) readPartition(ctx context.Context, client sarama.Client, topic string, p int32, r *Report) error {
	oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
	if err != nil {
		return fmt.Errorf("start of %s/%d: %w", topic, p, err)
	}
	end, err := kafkaclient.StableOffset(client, topic, p) // read_committed reads no further
	if err != nil {
		return fmt.Errorf("end of %s/%d: %w", topic, p, err)
	}
	if end <= oldest {
		return nil
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return fmt.Errorf("kafka consumer: %w", err)
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(topic, p, oldest)
	if err != nil {
		return fmt.Errorf("read %s/%d: %w", topic, p, err)
	}
	defer pc.Close()
	seen, moved := oldest, false // the offset after the last record read
	idle := time.NewTicker(markerIdle)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-pc.Errors():
			return fmt.Errorf("read %s/%d: %w", topic, p, err)
		case <-idle.C:
			// Exactly-once topics end with a transaction marker, which
			// the consumer never hands out: done when nothing else is
			// left before the end.
			if !moved {
				if _, found, err := kafkaclient.FirstCommitted(client, topic, p, seen, end); err == nil && !found {
					return nil
				}
			}
			moved = false
		case m := <-pc.Messages():
			seen, moved = m.Offset+1, true
			r.Kafka.Scanned++
			if t.sameKey(m.Key) {
				r.Kafka.Records = append(r.Kafka.Records, record(m))
			}
			// Transaction markers take offsets too: stop at the last
			// offset before the end seen at the start.
			if m.Offset >= end-1 {
				return nil
			}
		case <-time.After(30 * time.Second):
			return fmt.Errorf("read %s/%d: no record for 30s before offset %d", topic, p, end)
		}
	}
}

// markerIdle is how long reading a partition waits for the next record
// before it checks whether only transaction markers are left.
const markerIdle = 200 * time.Millisecond

// sameKey reports whether a record's key is the row's: byte-equal to the
// key capture would write, or the same JSON object.
func (t *tracer) sameKey(k []byte) bool {
	if bytes.Equal(k, t.kafkaKey) {
		return true
	}
	if len(k) == 0 || k[0] != '{' {
		return false
	}
	if row, err := debezium.DecodeKey(k); err == nil {
		k = row.AppendJSON(nil) // a Debezium key's payload
	}
	var a, b map[string]any
	da, db := json.NewDecoder(bytes.NewReader(k)), json.NewDecoder(bytes.NewReader(t.kafkaKey))
	da.UseNumber()
	db.UseNumber()
	if da.Decode(&a) != nil || db.Decode(&b) != nil {
		return false
	}
	return reflect.DeepEqual(a, b)
}

// record describes one of the row's messages.
func record(m *sarama.ConsumerMessage) Record {
	rec := Record{Offset: m.Offset, Time: m.Timestamp}
	if m.Value == nil {
		rec.Op = "tombstone"
		return rec
	}
	var position, unchanged string
	for _, h := range m.Headers {
		switch string(h.Key) {
		case pipeline.HeaderPosition:
			position = string(h.Value)
		case debezium.HeaderUnchanged:
			unchanged = string(h.Value)
		}
	}
	ev, err := debezium.DecodeEvent(m.Value, position, unchanged) // either encoding
	if err != nil {
		rec.Op = "undecodable: " + err.Error()
		return rec
	}
	rec.Op = string(ev.Op)
	rec.Position = ev.Position().String()
	rec.CommitTime = time.UnixMilli(ev.Source.TsMs)
	if ev.Op != pipeline.OpDelete && ev.After != nil {
		rec.row = make(map[string]string, len(ev.After))
		for _, c := range ev.After {
			if string(c.Value) != "null" {
				rec.row[c.Name] = pipeline.ScalarText(c.Value)
			}
		}
		rec.unchanged = ev.Unchanged
	}
	return rec
}

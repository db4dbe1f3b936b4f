package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// topicRecord is what the soak needs of one record of the orders topic.
type topicRecord struct {
	partition int32
	offset    int64
	position  string // the envelope's stream position (commit LSN:change LSN)
	ts        time.Time
	id        int64
	tombstone bool
	deleted   bool  // op d
	row       order // after image (c, u, r)
}

// readTopic reads every record of the orders topic a read_committed
// consumer sees, partition by partition in offset order, up to the last
// stable offsets at the time of the call (capture writes in Kafka
// transactions: their markers and aborted records are stepped over).
func readTopic(ctx context.Context, brokers []string) ([]topicRecord, error) {
	client, err := sarama.NewClient(brokers, probeConfig())
	if err != nil {
		return nil, fmt.Errorf("connect to the broker: %w", err)
	}
	defer client.Close()
	var out []topicRecord
	for part := range int32(partitions) {
		start, err := client.GetOffset(ordersTopic, part, sarama.OffsetOldest)
		if err != nil {
			return nil, fmt.Errorf("start offset of %s/%d: %w", ordersTopic, part, err)
		}
		if start != 0 {
			return nil, fmt.Errorf("%s/%d starts at offset %d: records were deleted", ordersTopic, part, start)
		}
		var decodeErr error
		err = testenv.EachCommitted(client, ordersTopic, part, func(m *sarama.ConsumerMessage) {
			if decodeErr != nil || pipeline.IsWatermark(m.Headers) || pipeline.IsControl(m.Headers) {
				return // how far the partition is complete, or a control record: not a change
			}
			var rec topicRecord
			if rec, decodeErr = decodeRecord(m); decodeErr == nil {
				out = append(out, rec)
			}
		})
		if err = errors.Join(err, decodeErr); err != nil {
			return nil, fmt.Errorf("read %s/%d: %w", ordersTopic, part, err)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func decodeRecord(m *sarama.ConsumerMessage) (topicRecord, error) {
	rec := topicRecord{partition: m.Partition, offset: m.Offset, ts: m.Timestamp}
	var key struct {
		ID json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(m.Key, &key); err != nil {
		return rec, fmt.Errorf("%s/%d@%d: key %q: %w", m.Topic, m.Partition, m.Offset, m.Key, err)
	}
	id, err := strconv.ParseInt(pipeline.ScalarText(key.ID), 10, 64)
	if err != nil {
		return rec, fmt.Errorf("%s/%d@%d: key %q: %w", m.Topic, m.Partition, m.Offset, m.Key, err)
	}
	rec.id = id
	if m.Value == nil {
		rec.tombstone = true
		return rec, nil
	}
	ev, err := pipeline.DecodeEvent(m.Value)
	if err != nil {
		return rec, fmt.Errorf("%s/%d@%d: %w", m.Topic, m.Partition, m.Offset, err)
	}
	rec.position = ev.Position().String()
	switch ev.Op {
	case pipeline.OpDelete:
		rec.deleted = true
		return rec, nil
	case pipeline.OpCreate, pipeline.OpUpdate, pipeline.OpRead:
	default:
		return rec, fmt.Errorf("%s/%d@%d: unexpected op %q", m.Topic, m.Partition, m.Offset, ev.Op)
	}
	ints := map[string]*int64{"item_id": &rec.row.Item, "quantity": &rec.row.Qty, "rev": &rec.row.Rev}
	for name, dst := range ints {
		v, ok := ev.After.Get(name)
		if !ok {
			return rec, fmt.Errorf("%s/%d@%d: after has no %s", m.Topic, m.Partition, m.Offset, name)
		}
		if *dst, err = strconv.ParseInt(pipeline.ScalarText(v), 10, 64); err != nil {
			return rec, fmt.Errorf("%s/%d@%d: %s: %w", m.Topic, m.Partition, m.Offset, name, err)
		}
	}
	st, ok := ev.After.Get("status")
	if !ok {
		return rec, fmt.Errorf("%s/%d@%d: after has no status", m.Topic, m.Partition, m.Offset)
	}
	rec.row.Status = pipeline.ScalarText(st)
	return rec, nil
}

// rowKey is a committed state of a row: its id and revision.
type rowKey struct{ id, rev int64 }

// LedgerCheck is how the changes committed in the order database compare
// with what is on Kafka.
type LedgerCheck struct {
	Changes    int // committed changes in the ledger
	OnKafka    int // of which found on Kafka with the committed values
	Lost       int // committed but not on Kafka (or with other values)
	Phantom    int // states on Kafka that no committed change accounts for
	OutOfOrder int // keys whose changes reached their partition out of commit order, or in two partitions
	Records    int // records on the topic
	Tombstones int
	Resent     int      // change records beyond the first for their state: capture's re-sends
	Examples   []string // the first few problems
}

// checkLedger compares the ledger with the topic's records.
func checkLedger(ledger []Change, recs []topicRecord) LedgerCheck {
	c := LedgerCheck{Changes: len(ledger), Records: len(recs)}
	seen := map[rowKey]order{}
	deletes := map[int64]bool{}
	type keyState struct {
		partition int32
		lastRev   int64 // highest revision seen so far in offset order
		last      topicRecord
		deleted   bool
		bad       bool
	}
	keys := map[int64]*keyState{}
	example := func(format string, args ...any) {
		if len(c.Examples) < 10 {
			c.Examples = append(c.Examples, fmt.Sprintf(format, args...))
		}
	}
	for _, r := range recs {
		ks := keys[r.id]
		if ks == nil {
			ks = &keyState{partition: r.partition}
			keys[r.id] = ks
		}
		if ks.partition != r.partition && !ks.bad {
			ks.bad = true
			c.OutOfOrder++
			example("order %d is in partitions %d and %d", r.id, ks.partition, r.partition)
		}
		switch {
		case r.tombstone:
			c.Tombstones++
		case r.deleted:
			if deletes[r.id] {
				c.Resent++
			}
			deletes[r.id] = true
			ks.deleted = true
		default:
			k := rowKey{r.id, r.row.Rev}
			if prev, dup := seen[k]; dup {
				c.Resent++
				if prev != r.row {
					example("order %d rev %d on Kafka twice with different values: %+v and %+v", r.id, r.row.Rev, prev, r.row)
					c.Phantom++
				}
				continue
			}
			seen[k] = r.row
			// A re-send repeats earlier states; a state seen for the first
			// time must be newer than every state before it, and no new
			// state may follow the delete.
			if (r.row.Rev < ks.lastRev || ks.deleted) && !ks.bad {
				ks.bad = true
				c.OutOfOrder++
				example("order %d rev %d (offset %d, position %s, %s) reached partition %d after rev %d (offset %d, position %s, %s; deleted: %v)",
					r.id, r.row.Rev, r.offset, r.position, r.ts.Format("15:04:05.000"), r.partition,
					ks.lastRev, ks.last.offset, ks.last.position, ks.last.ts.Format("15:04:05.000"), ks.deleted)
			}
			if r.row.Rev > ks.lastRev {
				ks.lastRev, ks.last = r.row.Rev, r
			}
		}
	}
	committed := map[rowKey]bool{}
	for _, ch := range ledger {
		if ch.Deleted {
			if deletes[ch.ID] {
				c.OnKafka++
			} else {
				c.Lost++
				example("delete of order %d (rev %d) is not on Kafka", ch.ID, ch.Row.Rev)
			}
			continue
		}
		k := rowKey{ch.ID, ch.Row.Rev}
		committed[k] = true
		got, ok := seen[k]
		switch {
		case !ok:
			c.Lost++
			example("%s of order %d (rev %d, %+v) is not on Kafka", ch.Op, ch.ID, ch.Row.Rev, ch.Row)
		case got != ch.Row:
			c.Lost++
			example("order %d rev %d is on Kafka as %+v, committed as %+v", ch.ID, ch.Row.Rev, got, ch.Row)
		default:
			c.OnKafka++
		}
	}
	for k := range seen {
		if !committed[k] {
			c.Phantom++
			example("order %d rev %d is on Kafka but was never committed", k.id, k.rev)
		}
	}
	return c
}

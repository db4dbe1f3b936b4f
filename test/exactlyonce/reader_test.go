package exactlyonce

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// rec is one change record of a table topic as a reader sees it.
type rec struct {
	Topic     string
	Partition int32
	Offset    int64
	ID        int64       // the key's id column
	Op        pipeline.Op // "" for a tombstone
	Rev       int64       // after.rev; -1 for a delete or a tombstone
	Pos       pipeline.Position
	PosText   string
}

// identity names the change a record carries: the position header
// (commit LSN and change LSN identify a change) plus what the record is
// (a delete and its tombstone share a position; snapshot rows of a chunk
// share one, so the key is part of it).
func (r rec) identity() string {
	op := string(r.Op)
	if op == "" {
		op = "tombstone"
	}
	return r.Topic + "|" + strconv.FormatInt(r.ID, 10) + "|" + r.PosText + "|" + op
}

// tp is a topic partition.
type tp struct {
	Topic     string
	Partition int32
}

// reader reads table topics with raw Fetch requests at one isolation
// level. It does not use sarama's consumer: under read_committed the last
// offsets below the last stable offset may be control markers or aborted
// records, which a consumer never hands out, so "read until the record at
// end-1" would wait forever. The raw batches say which offsets were
// passed, markers included.
type reader struct {
	brokers   []string
	isolation sarama.IsolationLevel
	client    sarama.Client
}

func newReader(brokers []string, isolation sarama.IsolationLevel) *reader {
	return &reader{brokers: brokers, isolation: isolation}
}

// conn returns the reader's client, connecting (again, after a broker
// restart) when needed.
func (r *reader) conn() (sarama.Client, error) {
	if r.client != nil && !r.client.Closed() {
		return r.client, nil
	}
	c, err := sarama.NewClient(r.brokers, testenv.SaramaConfig())
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	r.client = c
	return c, nil
}

// reset drops the client after an error, so the next call reconnects.
func (r *reader) reset() {
	if r.client != nil {
		_ = r.client.Close()
		r.client = nil
	}
}

func (r *reader) Close() { r.reset() }

// cut returns the end of every partition of topics at one moment: the
// last stable offsets (read_committed) or high watermarks, all in one
// ListOffsets request to the (single) broker, which answers it at once, so
// together they are a consistent cut of the topics.
func (r *reader) cut(topics []string) (map[tp]int64, error) {
	c, err := r.conn()
	if err != nil {
		return nil, err
	}
	if err := c.RefreshMetadata(topics...); err != nil {
		r.reset()
		return nil, fmt.Errorf("metadata: %w", err)
	}
	req := sarama.NewOffsetRequest(sarama.V3_6_0_0)
	req.IsolationLevel = r.isolation
	var all []tp
	var broker *sarama.Broker
	for _, topic := range topics {
		parts, err := c.Partitions(topic)
		if err != nil {
			r.reset()
			return nil, fmt.Errorf("partitions of %s: %w", topic, err)
		}
		for _, p := range parts {
			b, err := c.Leader(topic, p)
			if err != nil {
				r.reset()
				return nil, fmt.Errorf("leader of %s/%d: %w", topic, p, err)
			}
			broker = b // one broker leads everything
			req.AddBlock(topic, p, sarama.OffsetNewest, 1)
			all = append(all, tp{topic, p})
		}
	}
	resp, err := broker.GetAvailableOffsets(req)
	if err != nil {
		r.reset()
		return nil, fmt.Errorf("list offsets: %w", err)
	}
	out := make(map[tp]int64, len(all))
	for _, x := range all {
		b := resp.GetBlock(x.Topic, x.Partition)
		if b == nil || !errors.Is(b.Err, sarama.ErrNoError) {
			r.reset()
			return nil, fmt.Errorf("list offsets of %s/%d: %v", x.Topic, x.Partition, b)
		}
		out[x] = b.Offset
		if len(b.Offsets) == 1 {
			out[x] = b.Offsets[0]
		}
	}
	return out, nil
}

// readRange hands every record of the partition at offsets [from, to)
// that is visible at the reader's isolation level to fn, in offset order.
// Under read_committed, to must be at most the last stable offset.
func (r *reader) readRange(x tp, from, to int64, fn func(rec)) error {
	c, err := r.conn()
	if err != nil {
		return err
	}
	broker, err := c.Leader(x.Topic, x.Partition)
	if err != nil {
		r.reset()
		return fmt.Errorf("leader of %s/%d: %w", x.Topic, x.Partition, err)
	}
	next := from
	stuckSince := time.Now()
	for next < to {
		req := &sarama.FetchRequest{Version: 11, MaxWaitTime: 200, MinBytes: 1, MaxBytes: 16 << 20, Isolation: r.isolation, SessionEpoch: -1}
		req.AddBlock(x.Topic, x.Partition, next, 8<<20, -1)
		resp, err := broker.Fetch(req)
		if err != nil {
			r.reset()
			return fmt.Errorf("fetch %s/%d at %d: %w", x.Topic, x.Partition, next, err)
		}
		block := resp.GetBlock(x.Topic, x.Partition)
		if block == nil {
			return fmt.Errorf("fetch %s/%d at %d: no answer for the partition", x.Topic, x.Partition, next)
		}
		if !errors.Is(block.Err, sarama.ErrNoError) {
			return fmt.Errorf("fetch %s/%d at %d: %w", x.Topic, x.Partition, next, block.Err)
		}
		n, err := r.visit(x, block, next, to, fn)
		if err != nil {
			return err
		}
		if n > next {
			next, stuckSince = n, time.Now()
			continue
		}
		if time.Since(stuckSince) > 30*time.Second {
			return fmt.Errorf("fetch %s/%d: no progress past offset %d (want %d) for 30s", x.Topic, x.Partition, next, to)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// visit hands the visible records of one fetch answer in [from, to) to fn
// and returns the offset after the last batch it passed.
func (r *reader) visit(x tp, block *sarama.FetchResponseBlock, from, to int64, fn func(rec)) (int64, error) {
	next := from
	aborted := slices.Clone(block.AbortedTransactions)
	slices.SortFunc(aborted, func(a, b *sarama.AbortedTransaction) int { return int(a.FirstOffset - b.FirstOffset) })
	abortedPIDs := map[int64]bool{}
	for _, rs := range block.RecordsSet {
		b := rs.RecordBatch
		if b == nil || b.PartialTrailingRecord {
			break
		}
		last := b.FirstOffset + int64(b.LastOffsetDelta)
		for len(aborted) > 0 && aborted[0].FirstOffset <= last {
			abortedPIDs[aborted[0].ProducerID] = true
			aborted = aborted[1:]
		}
		if b.Control {
			if len(b.Records) > 0 && isAbortMarker(b.Records[0].Key) {
				delete(abortedPIDs, b.ProducerID)
			}
		} else if !(r.isolation == sarama.ReadCommitted && b.IsTransactional && abortedPIDs[b.ProducerID]) {
			for _, record := range b.Records {
				off := b.FirstOffset + record.OffsetDelta
				if off < from || off >= to {
					continue
				}
				got, ok, err := decodeRecord(x, off, record)
				if err != nil {
					return next, err
				}
				if ok {
					fn(got)
				}
			}
		}
		next = max(next, min(last+1, to))
	}
	return next, nil
}

// isAbortMarker reads a control record's key: version (int16), type
// (int16; 0 abort, 1 commit).
func isAbortMarker(key []byte) bool {
	return len(key) >= 4 && binary.BigEndian.Uint16(key[2:4]) == 0
}

// decodeRecord turns a table topic record into a rec; ok is false for
// records that are not changes (watermarks, control records).
func decodeRecord(x tp, off int64, r *sarama.Record) (rec, bool, error) {
	out := rec{Topic: x.Topic, Partition: x.Partition, Offset: off, Rev: -1}
	for _, h := range r.Headers {
		switch string(h.Key) {
		case pipeline.HeaderWatermark, pipeline.HeaderControl:
			return rec{}, false, nil
		case pipeline.HeaderPosition:
			out.PosText = string(h.Value)
		}
	}
	if out.PosText == "" {
		return rec{}, false, fmt.Errorf("%s/%d@%d: record without a position header (key %q)", x.Topic, x.Partition, off, r.Key)
	}
	pos, err := pipeline.ParsePosition(out.PosText)
	if err != nil {
		return rec{}, false, fmt.Errorf("%s/%d@%d: %w", x.Topic, x.Partition, off, err)
	}
	out.Pos = pos
	if strings.HasSuffix(x.Topic, eventsTopicSuffix) {
		return decodeEvent(out, r)
	}
	var key struct{ ID json.Number }
	dec := json.NewDecoder(bytes.NewReader(r.Key))
	dec.UseNumber()
	if err := dec.Decode(&key); err != nil {
		return rec{}, false, fmt.Errorf("%s/%d@%d: key %q: %w", x.Topic, x.Partition, off, r.Key, err)
	}
	if out.ID, err = key.ID.Int64(); err != nil {
		return rec{}, false, fmt.Errorf("%s/%d@%d: key %q: %w", x.Topic, x.Partition, off, r.Key, err)
	}
	if r.Value == nil {
		return out, true, nil // tombstone
	}
	ev, err := pipeline.DecodeEvent(r.Value)
	if err != nil {
		return rec{}, false, fmt.Errorf("%s/%d@%d: %w", x.Topic, x.Partition, off, err)
	}
	out.Op = ev.Op
	if ev.Op != pipeline.OpDelete {
		v, _ := ev.After.Get("rev")
		if out.Rev, err = strconv.ParseInt(pipeline.ScalarText(v), 10, 64); err != nil {
			return rec{}, false, fmt.Errorf("%s/%d@%d: rev %s: %w", x.Topic, x.Partition, off, v, err)
		}
	}
	return out, true, nil
}

// opEvent marks an outbox event's rec.
const opEvent pipeline.Op = "event"

// decodeEvent reads an outbox event of the writers: key the order id,
// payload {"rev":<rev>}.
func decodeEvent(out rec, r *sarama.Record) (rec, bool, error) {
	var err error
	if out.ID, err = strconv.ParseInt(string(r.Key), 10, 64); err != nil {
		return rec{}, false, fmt.Errorf("%s/%d@%d: event key %q: %w", out.Topic, out.Partition, out.Offset, r.Key, err)
	}
	var payload struct{ Rev int64 }
	if err := json.Unmarshal(r.Value, &payload); err != nil {
		return rec{}, false, fmt.Errorf("%s/%d@%d: event payload %q: %w", out.Topic, out.Partition, out.Offset, r.Value, err)
	}
	out.Op, out.Rev = opEvent, payload.Rev
	return out, true, nil
}

// readAll reads every visible record of topics up to one cut of their
// ends (see cut).
func (r *reader) readAll(topics []string) ([]rec, map[tp]int64, error) {
	ends, err := r.cut(topics)
	if err != nil {
		return nil, nil, err
	}
	var out []rec
	for x, end := range ends {
		if err := r.readRange(x, 0, end, func(m rec) { out = append(out, m) }); err != nil {
			return nil, nil, err
		}
	}
	return out, ends, nil
}

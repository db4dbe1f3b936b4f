package pipeline

import (
	"bytes"
	"fmt"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
)

// A Watermark says how far one partition of a table topic is complete:
// every change of a transaction that committed at or before LSN (its commit
// record ends at or before it) and belongs to this partition is at a lower
// offset. Capture writes one to every partition of every table topic once
// Kafka has acknowledged everything up to LSN, so a sink that has applied
// a partition up to the watermark has applied all of that partition's
// changes up to LSN, even while the partition is idle.
//
// On the wire a watermark is a tombstone (null value), so that consumers
// which are not cdcsync skip it as they skip any tombstone, with the key
// {"cdcsync.watermark":<partition>} (compacted topics need a key; one key
// per partition keeps only the latest watermark of each partition) and the
// data in headers: HeaderWatermark (the LSN as Postgres prints it, after
// "<epoch>@" when the source epoch is not 0, as in positions),
// HeaderWatermarkTime (AsOf in Unix milliseconds) and HeaderPartitions.
type Watermark struct {
	// Epoch is the source epoch LSN is in (see Position): after a
	// failover the new primary's LSNs may be below the old one's, and
	// only the epoch says they are newer.
	Epoch uint32
	LSN   pglogrepl.LSN
	// AsOf is when the source was at LSN (the commit time of the
	// transaction ending there, or the server time of a keepalive): a
	// store holding everything up to LSN is as fresh as the source was
	// then.
	AsOf time.Time
	// Partitions is how many partitions the topic had when the watermark
	// was written: a sink's applied position needs a watermark from each.
	Partitions int32
}

// Watermark header names.
const (
	HeaderWatermark     = "cdcsync.watermark"
	HeaderWatermarkTime = "cdcsync.watermark.ts_ms"
	HeaderPartitions    = "cdcsync.partitions"
)

// WatermarkKey is the record key of partition's watermarks.
func WatermarkKey(partition int32) []byte {
	return append(strconv.AppendInt([]byte(`{"cdcsync.watermark":`), int64(partition), 10), '}')
}

// WatermarkKeyWithSchema is WatermarkKey in Kafka Connect JsonConverter's
// envelope, for topics written with the debezium encoding and schemas
// enabled: a Connect consumer converts every key, a tombstone's too, and
// refuses one without "schema" and "payload".
func WatermarkKeyWithSchema(partition int32) []byte {
	b := []byte(`{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"cdcsync.watermark"}],` +
		`"optional":false,"name":"cdcsync.Watermark"},"payload":`)
	return append(append(b, WatermarkKey(partition)...), '}')
}

// Text renders w's epoch and LSN as the HeaderWatermark value:
// "<epoch>@<lsn>", or the LSN alone in epoch 0.
func (w Watermark) Text() string { return w.EpochLSN().String() }

// Headers returns the record headers carrying w.
func (w Watermark) Headers() []sarama.RecordHeader {
	return []sarama.RecordHeader{
		{Key: []byte(HeaderWatermark), Value: []byte(w.Text())},
		{Key: []byte(HeaderWatermarkTime), Value: strconv.AppendInt(nil, w.AsOf.UnixMilli(), 10)},
		{Key: []byte(HeaderPartitions), Value: strconv.AppendInt(nil, int64(w.Partitions), 10)},
	}
}

// ParseWatermark reads a watermark from a record's headers. ok is false
// for any other record; err is set for a watermark record that is
// malformed.
func ParseWatermark(headers []*sarama.RecordHeader) (w Watermark, ok bool, err error) {
	var lsn, ts, parts []byte
	for _, h := range headers {
		if h == nil {
			continue
		}
		switch {
		case bytes.Equal(h.Key, []byte(HeaderWatermark)):
			lsn, ok = h.Value, true
		case bytes.Equal(h.Key, []byte(HeaderWatermarkTime)):
			ts = h.Value
		case bytes.Equal(h.Key, []byte(HeaderPartitions)):
			parts = h.Value
		}
	}
	if !ok {
		return Watermark{}, false, nil
	}
	epoch, rest, err := cutEpoch(string(lsn))
	if err != nil {
		return Watermark{}, true, fmt.Errorf("watermark %s header: %w", HeaderWatermark, err)
	}
	if w.LSN, err = pglogrepl.ParseLSN(rest); err != nil {
		return Watermark{}, true, fmt.Errorf("watermark %s header: %w", HeaderWatermark, err)
	}
	w.Epoch = epoch
	ms, err := strconv.ParseInt(string(ts), 10, 64)
	if err != nil {
		return Watermark{}, true, fmt.Errorf("watermark %s header: %w", HeaderWatermarkTime, err)
	}
	w.AsOf = time.UnixMilli(ms)
	n, err := strconv.ParseInt(string(parts), 10, 32)
	if err != nil || n < 1 {
		return Watermark{}, true, fmt.Errorf("watermark %s header %q: want a positive count", HeaderPartitions, parts)
	}
	w.Partitions = int32(n)
	return w, true, nil
}

// IsWatermark reports whether a record with these headers is a watermark
// (which readers of the table's rows skip).
func IsWatermark(headers []*sarama.RecordHeader) bool {
	for _, h := range headers {
		if h != nil && bytes.Equal(h.Key, []byte(HeaderWatermark)) {
			return true
		}
	}
	return false
}

// EpochLSN is the point w says its partition is complete through.
func (w Watermark) EpochLSN() EpochLSN { return EpochLSN{Epoch: w.Epoch, LSN: w.LSN} }

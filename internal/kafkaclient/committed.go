package kafkaclient

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/IBM/sarama"
)

// ReadCommitted hands fn every record of offsets [from, to) of a partition
// that a read_committed consumer sees: committed transactions and
// non-transactional records, in offset order; to is at most the stable
// offset (StableOffset). It stops early when fn returns false.
//
// It fetches by hand rather than with sarama's consumer: the consumer
// skips transaction markers without saying so, and a reader that waits for
// the offset before the end waits forever when that offset is a marker
// (as it is after every committed transaction).
func ReadCommitted(client sarama.Client, topic string, partition int32, from, to int64, fn func(offset int64, b *sarama.RecordBatch, r *sarama.Record) bool) error {
	broker, err := client.Leader(topic, partition)
	if err != nil {
		return fmt.Errorf("leader of %s/%d: %w", topic, partition, err)
	}
	stuck := 0
	for offset := from; offset < to; {
		req := &sarama.FetchRequest{Version: 11, MaxWaitTime: 100, MinBytes: 1, MaxBytes: 16 << 20, Isolation: sarama.ReadCommitted}
		req.AddBlock(topic, partition, offset, 16<<20, -1)
		resp, err := broker.Fetch(req)
		if err != nil {
			return fmt.Errorf("fetch %s/%d at %d: %w", topic, partition, offset, err)
		}
		block := resp.GetBlock(topic, partition)
		if block == nil {
			return fmt.Errorf("fetch %s/%d at %d: %w", topic, partition, offset, sarama.ErrIncompleteResponse)
		}
		if !errors.Is(block.Err, sarama.ErrNoError) {
			return fmt.Errorf("fetch %s/%d at %d: %w", topic, partition, offset, block.Err)
		}
		next, more := scanCommitted(block, offset, to, fn)
		if !more {
			return nil // fn is done
		}
		if next <= offset {
			// Below the stable offset there is always a batch to hand
			// out (a record, a marker or an aborted record): an empty
			// answer is a short read, and returning as if the range were
			// read would let a caller skip records (an older checkpoint,
			// an offset committed past a record).
			if stuck++; stuck < shortReadRetries {
				continue
			}
			return fmt.Errorf("fetch %s/%d at %d: %w (reading up to %d)", topic, partition, offset, ErrShortRead, to)
		}
		stuck = 0
		offset = next
	}
	return nil
}

// ErrShortRead: a fetch below the end given to ReadCommitted came back
// empty, again and again.
var ErrShortRead = errors.New("no records returned below the requested end")

// shortReadRetries is how many empty fetches in a row ReadCommitted takes
// before it reports ErrShortRead.
const shortReadRetries = 3

// FirstCommitted reports whether offsets [from, to) of a partition hold a
// record a read_committed consumer is handed (rather than only
// transaction markers and aborted records), and the offset of the first.
func FirstCommitted(client sarama.Client, topic string, partition int32, from, to int64) (int64, bool, error) {
	at, found := int64(-1), false
	err := ReadCommitted(client, topic, partition, from, to, func(offset int64, _ *sarama.RecordBatch, _ *sarama.Record) bool {
		at, found = offset, true
		return false
	})
	return at, found, err
}

// scanCommitted walks the record batches of one fetch response from
// offset, skipping transaction markers and the records of aborted
// transactions, and returns the offset after the last batch.
func scanCommitted(block *sarama.FetchResponseBlock, offset, to int64, fn func(int64, *sarama.RecordBatch, *sarama.Record) bool) (next int64, more bool) {
	aborted := slices.Clone(block.AbortedTransactions)
	slices.SortFunc(aborted, func(a, b *sarama.AbortedTransaction) int { return int(a.FirstOffset - b.FirstOffset) })
	abortedPIDs := map[int64]bool{}
	next = offset
	for _, rs := range block.RecordsSet {
		b := rs.RecordBatch
		if b == nil || b.PartialTrailingRecord {
			continue
		}
		last := b.FirstOffset + int64(b.LastOffsetDelta)
		for len(aborted) > 0 && aborted[0].FirstOffset <= last {
			abortedPIDs[aborted[0].ProducerID] = true
			aborted = aborted[1:]
		}
		next = max(next, last+1)
		if b.Control {
			if len(b.Records) > 0 && controlType(b.Records[0].Key) == 0 { // abort marker
				delete(abortedPIDs, b.ProducerID)
			}
			continue
		}
		if b.IsTransactional && abortedPIDs[b.ProducerID] {
			continue
		}
		for _, r := range b.Records {
			at := b.FirstOffset + r.OffsetDelta
			if at < offset || at >= to {
				continue
			}
			if !fn(at, b, r) {
				return next, false
			}
		}
	}
	return next, true
}

// controlType reads a control record's key: version (int16), type (int16;
// 0 abort, 1 commit).
func controlType(key []byte) int16 {
	if len(key) < 4 {
		return -1
	}
	return int16(binary.BigEndian.Uint16(key[2:4]))
}

// lastValueWindow is how many offsets before the stable offset
// LastCommittedValue looks at first; it doubles until the key is found or
// the partition's start is reached.
const lastValueWindow = 512

// LastCommittedValue returns the value of the newest committed record with
// key on a partition, read_committed, and false when there is none (or the
// topic does not exist).
func LastCommittedValue(client sarama.Client, topic string, partition int32, key []byte) ([]byte, bool, error) {
	if err := client.RefreshMetadata(topic); errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return nil, false, nil
	} else if err != nil {
		return nil, false, fmt.Errorf("kafka metadata of %s: %w", topic, err)
	}
	end, err := StableOffset(client, topic, partition)
	if err != nil {
		return nil, false, err
	}
	oldest, err := client.GetOffset(topic, partition, sarama.OffsetOldest)
	if err != nil {
		return nil, false, fmt.Errorf("oldest offset of %s/%d: %w", topic, partition, err)
	}
	window := int64(lastValueWindow)
	for upTo := end; upTo > oldest; window *= 2 {
		from := max(oldest, upTo-window)
		var value []byte
		found := false
		err := ReadCommitted(client, topic, partition, from, upTo, func(_ int64, _ *sarama.RecordBatch, r *sarama.Record) bool {
			if bytes.Equal(r.Key, key) {
				value, found = r.Value, true
			}
			return true
		})
		if err != nil || found {
			return value, found, err
		}
		upTo = from
	}
	return nil, false, nil
}

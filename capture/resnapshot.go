package capture

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/pipeline"
)

// resnapshotPrefix marks the logical message that ends the initial snapshot
// of a slot in a source epoch above 0 (a slot created again after one was
// lost). It is transactional, committed with the snapshot's end, so the
// stream meets it exactly when the snapshot is complete, and the slot is
// confirmed past it only once Kafka acknowledged the markers it causes.
const resnapshotPrefix = "cdcsync.resnapshot"

// requestResnapshotDone writes the message in tx and records its LSN as
// the recovery's end (capture_state.resnapshot_lsn, recovery.go).
func requestResnapshotDone(ctx context.Context, tx pgx.Tx, state stateStore, slot string, epoch uint32) error {
	content := slot + ":" + strconv.FormatUint(uint64(epoch), 10)
	_, err := tx.Exec(ctx, "UPDATE "+state.table()+` SET resnapshot_lsn = pg_logical_emit_message(true, $2, $3), updated_at = now()
		WHERE slot = $1`, slot, resnapshotPrefix, content)
	if err != nil {
		return fmt.Errorf("finish initial snapshot: resnapshot message: %w", err)
	}
	return nil
}

// resnapshotDone writes to the topic of every snapshotted table the keyed
// control record that says: every row of the table that exists is on the
// topic at a position in this epoch, so whatever a consumer holds from an
// older epoch was deleted while no slot recorded (pipeline.ResnapshotKey).
// Messages of other slots (other captures of the database) are ignored.
func (s *stream) resnapshotDone(ctx context.Context, content string, at pglogrepl.LSN) error {
	slot, epochText, ok := strings.Cut(content, ":")
	if !ok || s.backfill == nil || slot != s.backfill.cfg.Slot {
		return nil
	}
	epoch, err := strconv.ParseUint(epochText, 10, 32)
	if err != nil {
		return fmt.Errorf("resnapshot message %q: %w", content, err)
	}
	pos := pipeline.Position{Epoch: uint32(epoch)}
	cfg := s.backfill.cfg
	key, value := pipeline.ResnapshotKey, pipeline.ResnapshotValue
	if cfg.Encoding.Encoding == "debezium" && cfg.SchemasEnable {
		// Connect consumers convert every key and value.
		key, value = pipeline.ResnapshotKeyWithSchema, pipeline.ResnapshotValueWithSchema
	}
	for _, t := range s.backfill.snapshotted {
		rec := Record{
			Topic: pipeline.Topic(cfg.TopicPrefix, t.Schema, t.Name),
			Key:   []byte(key),
			// Not null: compaction keeps the latest record of a key with
			// a value, but drops tombstones (pipeline.ResnapshotKey).
			Value:    value(t.String(), uint32(epoch)),
			Position: pos,
			Headers: []sarama.RecordHeader{
				{Key: headerPosition, Value: pos.AppendText(nil)},
				{Key: []byte(pipeline.HeaderControl), Value: []byte(pipeline.ControlResnapshotDone)},
				{Key: []byte(pipeline.HeaderTable), Value: []byte(t.String())},
			},
		}
		if err := s.prod.send(ctx, rec, s.keepAlive, s.interval); err != nil {
			return err
		}
	}
	s.backfill.recovery.resnapshotSent(at)
	s.log.Info("resnapshot done: the sinks remove rows of older source epochs", "source_epoch", epoch, "tables", len(s.backfill.snapshotted))
	return nil
}

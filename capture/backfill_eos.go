package capture

import (
	"context"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/pipeline"
)

// Backfills under exactly-once delivery: a chunk's rows and the backfill's
// progress after it commit in one Kafka transaction (the checkpoint holds
// the progress, pipeline.BackfillMark). The progress in <state schema>.backfills
// is stored after that commit; a capture stopped between the two would
// read the chunk again and emit its rows twice, so a session takes the
// checkpoint's progress when it is ahead of the table's.

// setMark records on p's window the backfill's progress once p is on
// Kafka: bf holds the progress of the chunks before it (the previous one
// is stored before this one is handed over).
func (b *backfiller) setMark(p *pendingChunk, bf *Backfill) {
	lastKey := p.lastKey
	if lastKey == nil {
		lastKey = bf.LastKey
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	p.w.markID = bf.ID
	p.w.mark = pipeline.BackfillMark{LastKey: lastKey, ChunksDone: p.n + 1, RowsDone: bf.RowsDone + int64(p.rows), RowsSkipped: bf.RowsSkipped}
}

// resumeFromCheckpoint moves bf (running) to the progress the session's
// Kafka checkpoint has for it, when that is ahead of the stored one.
func (b *backfiller) resumeFromCheckpoint(ctx context.Context, conn *pgx.Conn, bf *Backfill, log *slog.Logger) error {
	m, ok := b.resume[bf.ID]
	if !ok || m.ChunksDone <= bf.ChunksDone {
		return nil
	}
	stored := bf.ChunksDone
	bf.LastKey, bf.ChunksDone, bf.RowsDone, bf.RowsSkipped = m.LastKey, m.ChunksDone, m.RowsDone, m.RowsSkipped
	if _, err := b.store.saveProgress(ctx, conn, bf, false); err != nil {
		return err
	}
	log.Info("backfill progress taken from the Kafka checkpoint: its last chunks are on Kafka already", "chunks_stored", stored, "chunks_on_kafka", m.ChunksDone)
	delete(b.resume, bf.ID)
	return nil
}

package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

// inventory applies order events to the inventory store: one transaction
// per batch updates the order projection and moves each item's reserved
// and shipped counters by the difference between its orders' previous and
// new contributions. Positions in the projection make it idempotent.
type inventory struct {
	pool   *pgxpool.Pool
	orders orderSchema
	// avail refreshes the Redis availability cache after each commit; nil
	// when the availability cache is off.
	avail *availability
	// topic is the orders topic; availApplied keeps the availability
	// cache's applied-through position (nil without Redis).
	topic        string
	availApplied *redisApplied
	log          *slog.Logger // nil logs nothing
}

var _ throughApplier = (*inventory)(nil)

// itemDelta is the change of one item's counters within a batch.
type itemDelta struct{ reserved, shipped int64 }

// itemAvailability is an item's availability after a batch, with the
// version that orders it among refreshes.
type itemAvailability struct {
	item, available, version int64
}

// segment is a run of order changes, or a single truncate: a batch is
// applied segment by segment so that a truncate sees exactly the changes
// before it.
type segment struct {
	changes  []orderChange
	truncate *Message
}

// ensureSchema creates the store's tables if needed.
func (a *inventory) ensureSchema(ctx context.Context) error {
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("inventory schema: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var exists bool
	if err := tx.QueryRow(ctx, sqlSchemaExists).Scan(&exists); err != nil {
		return fmt.Errorf("inventory schema: %w", err)
	}
	if !exists {
		if _, err := tx.Exec(ctx, sqlSchemaLock); err != nil {
			return fmt.Errorf("inventory schema lock: %w", err)
		}
		var seqExists, versionsExist bool
		if err := tx.QueryRow(ctx, sqlVersioningExists).Scan(&seqExists, &versionsExist); err != nil {
			return fmt.Errorf("inventory schema: %w", err)
		}
		for _, stmt := range inventorySchema {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("inventory schema: %w", err)
			}
		}
		if !seqExists {
			if _, err := tx.Exec(ctx, sqlSeedVersions); err != nil {
				return fmt.Errorf("inventory schema: start the availability versions: %w", err)
			}
		}
		if !versionsExist {
			for _, stmt := range []string{sqlFillVersions, sqlQueueAllItems} {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("inventory schema: version the items: %w", err)
				}
			}
		}
	}
	if _, err := tx.Exec(ctx, sqlEnsureState, a.stateKey()); err != nil {
		return fmt.Errorf("inventory state row: %w", err)
	}
	if _, err := tx.Exec(ctx, sqlEnsureApplied, config.SinkInventory); err != nil {
		return fmt.Errorf("inventory applied row: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("inventory schema commit: %w", err)
	}
	return nil
}

func (a *inventory) stateKey() string { return a.orders.schema + "." + a.orders.table }

// Apply implements Applier.
func (a *inventory) Apply(ctx context.Context, batch []*Message) error {
	_, err := a.ApplyThrough(ctx, batch, nil)
	return err
}

// ApplyThrough implements throughApplier: mark (when not nil) is recorded
// in the batch's transaction, and in the availability cache after the
// batch's refresh. The position returned is the lower of the two.
func (a *inventory) ApplyThrough(ctx context.Context, batch []*Message, mark *partitionMark) (Applied, error) {
	segments, hasTruncate, err := a.plan(batch)
	if err != nil || (len(segments) == 0 && mark == nil) {
		return Applied{}, err
	}
	var applied Applied
	avail, err := a.applyTx(ctx, segments, hasTruncate, mark, &applied)
	if err != nil && refusedData(err) {
		// Some message holds a value the store refuses (text with a NUL
		// byte, a counter overflowing bigint): find it by applying the
		// messages one by one, instead of retrying the batch forever.
		if err := a.applyEach(ctx, batch); err != nil || mark == nil {
			return Applied{}, err
		}
		avail, err = a.applyTx(ctx, nil, false, mark, &applied)
	}
	if err != nil {
		return Applied{}, err
	}
	if err := a.finish(ctx, avail, hasTruncate); err != nil {
		return Applied{}, err
	}
	if mark == nil || a.availApplied == nil {
		return applied, nil
	}
	cached, err := a.availApplied.record(ctx, mark)
	if err != nil {
		return Applied{}, err
	}
	return lowest(applied, cached), nil
}

// finish refreshes the availability of a committed batch. After a truncate
// (applied or stale) it also drains the refresh queue the truncate filled,
// chunk by chunk, before the batch counts as applied: its offset is
// committed only once the cache shows the truncate. A retry after a timeout
// goes on where the drain stopped.
func (a *inventory) finish(ctx context.Context, avail []itemAvailability, hasTruncate bool) error {
	if err := a.refresh(ctx, avail); err != nil {
		return err
	}
	if hasTruncate {
		return a.drainQueue(ctx, false)
	}
	return nil
}

// refresh updates the availability cache after a commit. A failure here
// retries the whole batch, whose events are then stale but still touch
// their items, so the refresh happens on the retry.
func (a *inventory) refresh(ctx context.Context, avail []itemAvailability) error {
	if a.avail == nil || len(avail) == 0 {
		return nil
	}
	refused, err := a.avail.refresh(ctx, avail)
	if err != nil || len(refused) == 0 {
		return err
	}
	return a.repair(ctx, refused)
}

// applyEach applies the batch one message per transaction, dead-lettering
// the messages the store refuses.
func (a *inventory) applyEach(ctx context.Context, batch []*Message) error {
	for _, m := range batch {
		if m.Err != nil {
			continue
		}
		segments, hasTruncate, err := a.plan([]*Message{m})
		if err != nil {
			return err
		}
		if len(segments) == 0 {
			continue
		}
		avail, err := a.applyTx(ctx, segments, hasTruncate, nil, nil)
		if err != nil && refusedData(err) {
			m.Err = permanentf("inventory store refused it: %v", err)
			continue
		}
		if err != nil {
			return err
		}
		if err := a.finish(ctx, avail, hasTruncate); err != nil {
			return err
		}
	}
	return nil
}

// refusedData reports whether Postgres refused a value itself (data
// exception or integrity violation): retrying the same data cannot help.
func refusedData(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	class := pgErr.Code[:2]
	return class == "22" || class == "23"
}

// plan parses the batch into segments, setting Err on messages that can
// never be applied. An error is a configuration problem (fatal): nothing
// of the batch may be applied.
func (a *inventory) plan(batch []*Message) (segments []segment, hasTruncate bool, err error) {
	var cur []orderChange
	for _, m := range batch {
		m.Skip = ""
		if m.Event.Op == pipeline.OpTruncate {
			if m.Event.Source.Schema != a.orders.schema || m.Event.Source.Table != a.orders.table {
				m.Err = permanentf("truncate of table %s.%s on the topic of %s", m.Event.Source.Schema, m.Event.Source.Table, a.stateKey())
				continue
			}
			if len(cur) > 0 {
				segments = append(segments, segment{changes: cur})
				cur = nil
			}
			segments = append(segments, segment{truncate: m})
			hasTruncate = true
			continue
		}
		chs, err := a.orders.changes(m)
		if fatal(err) {
			return nil, false, err
		}
		if err != nil {
			m.Err = err
			continue
		}
		cur = append(cur, chs...)
	}
	if len(cur) > 0 {
		segments = append(segments, segment{changes: cur})
	}
	return segments, hasTruncate, nil
}

// applyTx runs the batch's transaction and returns the availability of
// every item it touched. With a mark, it records the mark in the same
// transaction and sets *applied to the store's applied-through position.
func (a *inventory) applyTx(ctx context.Context, segments []segment, hasTruncate bool, mark *partitionMark, applied *Applied) ([]itemAvailability, error) {
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("inventory begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	lockState := sqlStateShare
	if hasTruncate {
		lockState = sqlStateExclusive
	}
	var te, tc, tl int64
	if err := tx.QueryRow(ctx, lockState, a.stateKey()).Scan(&te, &tc, &tl); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			// Someone removed the row; recreate it and retry.
			_, _ = a.pool.Exec(ctx, sqlEnsureState, a.stateKey())
		}
		return nil, fmt.Errorf("inventory lock state: %w", err)
	}
	truncatedAt := storedPosition(te, tc, tl)

	deltas := map[int64]*itemDelta{}
	for _, seg := range segments {
		if seg.truncate != nil {
			err = a.applyTruncate(ctx, tx, seg.truncate, &truncatedAt, deltas)
		} else {
			err = a.applyChanges(ctx, tx, seg.changes, truncatedAt, deltas)
		}
		if err != nil {
			return nil, err
		}
	}
	avail, err := a.writeItems(ctx, tx, deltas)
	if err != nil {
		return nil, err
	}
	if hasTruncate && len(avail) > 0 {
		// A truncate may change any number of items: their refresh is
		// queued in this transaction and drained in chunks, so that it
		// neither has to fit in one attempt nor is lost if the sink stops
		// after the commit (a replayed truncate is stale and touches
		// nothing).
		items := make([]int64, len(avail))
		for i, av := range avail {
			items[i] = av.item
		}
		if _, err := tx.Exec(ctx, sqlQueueItems, items); err != nil {
			return nil, fmt.Errorf("inventory queue availability refresh: %w", err)
		}
		if _, err := tx.Exec(ctx, sqlNotify); err != nil {
			return nil, fmt.Errorf("inventory queue availability refresh: %w", err)
		}
		avail = nil
	}
	if mark != nil {
		// Last, after the item rows: every transaction takes this lock
		// in the same place, so it adds no deadlock.
		if *applied, err = recordApplied(ctx, tx, config.SinkInventory, []string{a.topic}, mark); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("inventory commit: %w", err)
	}
	return avail, nil
}

// applyChanges folds a segment's changes into the projection in memory
// (several events of one order in a batch are applied in order, then
// written once) and accumulates the counters' deltas.
func (a *inventory) applyChanges(ctx context.Context, tx pgx.Tx, changes []orderChange, truncatedAt pipeline.Position, deltas map[int64]*itemDelta) error {
	applied := map[*Message]bool{}
	live := changes[:0:0]
	ids := make([]string, 0, len(changes))
	for i := range changes {
		ch := &changes[i]
		if ch.item != nil {
			touch(deltas, *ch.item)
		}
		if !truncatedAt.Less(ch.pos) {
			skip(ch.msg, skipTruncated, applied)
			continue
		}
		live = append(live, *ch)
		ids = append(ids, ch.id)
	}
	if len(live) == 0 {
		return nil
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	states, err := a.lockOrders(ctx, tx, ids)
	if err != nil {
		return err
	}

	dirty := map[string]bool{}
	for i := range live {
		ch := &live[i]
		prev := states[ch.id]
		if prev != nil && prev.Item != nil {
			touch(deltas, *prev.Item)
		}
		if prev != nil && !prev.Pos.Less(ch.pos) {
			skip(ch.msg, skipStale, applied)
			continue
		}
		next := ch.apply(prev)
		if item, r, s, ok := a.orders.contribution(prev); ok {
			d := touch(deltas, item)
			d.reserved -= r
			d.shipped -= s
		}
		if item, r, s, ok := a.orders.contribution(next); ok {
			d := touch(deltas, item)
			d.reserved += r
			d.shipped += s
		}
		states[ch.id] = next
		dirty[ch.id] = true
		applied[ch.msg] = true
		ch.msg.Skip = ""
	}
	if len(dirty) == 0 {
		return nil
	}
	return a.writeOrders(ctx, tx, states, slices.Sorted(maps.Keys(dirty)))
}

// skip records why a message changed nothing, unless another change of the
// same message (a primary-key update) was applied.
func skip(m *Message, reason string, applied map[*Message]bool) {
	if !applied[m] {
		m.Skip = reason
	}
}

func touch(deltas map[int64]*itemDelta, item int64) *itemDelta {
	d := deltas[item]
	if d == nil {
		d = &itemDelta{}
		deltas[item] = d
	}
	return d
}

// lockOrders locks (creating placeholders where needed) and reads the
// projection rows of ids.
func (a *inventory) lockOrders(ctx context.Context, tx pgx.Tx, ids []string) (map[string]*orderState, error) {
	if _, err := tx.Exec(ctx, sqlLockOrders, ids); err != nil {
		return nil, fmt.Errorf("inventory lock orders: %w", err)
	}
	rows, _ := tx.Query(ctx, sqlReadOrders, ids)
	states := make(map[string]*orderState, len(ids))
	var (
		id         string
		s          orderState
		te, tc, tl int64
	)
	_, err := pgx.ForEachRow(rows, []any{&id, &s.Item, &s.Quantity, &s.Status, &s.Deleted, &te, &tc, &tl}, func() error {
		st := s
		st.Pos = storedPosition(te, tc, tl)
		states[id] = &st
		s = orderState{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("inventory read orders: %w", err)
	}
	return states, nil
}

func (a *inventory) writeOrders(ctx context.Context, tx pgx.Tx, states map[string]*orderState, ids []string) error {
	n := len(ids)
	items, qtys := make([]*int64, n), make([]*int64, n)
	statuses := make([]*string, n)
	deleted := make([]bool, n)
	epochs, commits, changes := make([]int64, n), make([]int64, n), make([]int64, n)
	for i, id := range ids {
		s := states[id]
		items[i], qtys[i], statuses[i], deleted[i] = s.Item, s.Quantity, s.Status, s.Deleted
		epochs[i], commits[i], changes[i] = int64(s.Pos.Epoch), int64(s.Pos.Commit), int64(s.Pos.Change)
	}
	if _, err := tx.Exec(ctx, sqlUpsertOrders, ids, items, qtys, statuses, deleted, epochs, commits, changes); err != nil {
		return fmt.Errorf("inventory write orders: %w", err)
	}
	return nil
}

// applyTruncate releases every order older than the truncate and moves the
// table's watermark to it; a truncate at or before the watermark is stale.
func (a *inventory) applyTruncate(ctx context.Context, tx pgx.Tx, m *Message, truncatedAt *pipeline.Position, deltas map[int64]*itemDelta) error {
	pos := m.Event.Position()
	if !truncatedAt.Less(pos) {
		m.Skip = skipStale
		return nil
	}
	rows, _ := tx.Query(ctx, sqlTruncateOrders, int64(pos.Commit), int64(pos.Change), a.orders.reserved, a.orders.shipped, int64(pos.Epoch))
	var item, reserved, shipped int64
	_, err := pgx.ForEachRow(rows, []any{&item, &reserved, &shipped}, func() error {
		d := touch(deltas, item)
		d.reserved -= reserved
		d.shipped -= shipped
		return nil
	})
	if err != nil {
		return fmt.Errorf("inventory truncate: %w", err)
	}
	if _, err := tx.Exec(ctx, sqlSetTruncate, a.stateKey(), int64(pos.Commit), int64(pos.Change), int64(pos.Epoch)); err != nil {
		return fmt.Errorf("inventory record truncate: %w", err)
	}
	*truncatedAt = pos
	return nil
}

// writeItems applies the deltas and returns the items' new availability.
func (a *inventory) writeItems(ctx context.Context, tx pgx.Tx, deltas map[int64]*itemDelta) ([]itemAvailability, error) {
	if len(deltas) == 0 {
		return nil, nil
	}
	items := slices.Sorted(maps.Keys(deltas))
	reserved, shipped := make([]int64, len(items)), make([]int64, len(items))
	for i, it := range items {
		reserved[i], shipped[i] = deltas[it].reserved, deltas[it].shipped
	}
	rows, _ := tx.Query(ctx, sqlUpsertItems, items, reserved, shipped)
	out := make([]itemAvailability, 0, len(items))
	var av itemAvailability
	_, err := pgx.ForEachRow(rows, []any{&av.item, &av.available, &av.version}, func() error {
		out = append(out, av)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("inventory write items: %w", err)
	}
	return out, nil
}

// storedPosition is a position as the inventory store's columns hold it.
func storedPosition(epoch, commit, change int64) pipeline.Position {
	return pipeline.Position{Epoch: uint32(epoch), Commit: pglogrepl.LSN(commit), Change: pglogrepl.LSN(change)}
}

package capture

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Slot creation, the initial snapshot and streaming are exclusive across
// capture processes of one slot: each session first takes a session-level
// advisory lock on an ordinary connection and holds it (and that
// connection) until the session ends. A second capture (the standby of
// deploy/k8s) fails to take it and waits; it never reads the slot's state,
// creates, drops or streams the slot meanwhile. The slot's own "active"
// flag cannot do this: the slot is inactive between its creation and the
// start of streaming, and a standby used to act on it then.

// lockClass is the first key of the two-key advisory lock (the letters
// "cdcs"), so that capture's locks do not collide with an application's
// single-key advisory locks; the second key is a hash of the slot's name.
const lockClass int32 = 0x63646373

// lockPoll is how often a held lock's connection is checked: a lost
// connection releases the lock on the server, and the session must stop
// producing before another capture takes over.
const lockPoll = time.Second

// slotLockKey is the second key of the slot's advisory lock.
func slotLockKey(slot string) int32 {
	h := fnv.New32a()
	h.Write([]byte("cdcsync capture slot " + slot))
	return int32(h.Sum32())
}

// slotLock is a held session lock.
type slotLock struct {
	conn *pgx.Conn
}

// acquireSlotLock takes the slot's lock on conn without waiting. When
// another session holds it, it returns an ErrSlotActive error naming the
// holder's backend pid.
func acquireSlotLock(ctx context.Context, conn *pgx.Conn, slot string) (*slotLock, error) {
	key := slotLockKey(slot)
	var got bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", lockClass, key).Scan(&got); err != nil {
		return nil, fmt.Errorf("take the lock of slot %s: %w", slot, err)
	}
	if got {
		return &slotLock{conn: conn}, nil
	}
	var holder *int32
	_ = conn.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND classid = $1::int4::oid AND objid = $2::int4::oid AND objsubid = 2 LIMIT 1`, lockClass, key).Scan(&holder)
	if holder != nil {
		return nil, fmt.Errorf("%w: slot %s is locked by another capture (backend pid %d)", ErrSlotActive, slot, *holder)
	}
	return nil, fmt.Errorf("%w: slot %s is locked by another capture", ErrSlotActive, slot)
}

// watch checks the lock's connection every lockPoll until ctx ends, and
// calls lost (once) when it fails: the server released the lock with it.
func (l *slotLock) watch(ctx context.Context, lost func(error)) {
	t := time.NewTicker(lockPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := l.conn.Ping(ctx); err != nil {
			if ctx.Err() == nil {
				lost(fmt.Errorf("lost the connection holding the slot's lock: %w", err))
			}
			return
		}
	}
}

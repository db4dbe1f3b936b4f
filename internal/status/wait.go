package status

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
)

// ErrNotCaughtUp is returned (wrapped, with what is left) by WaitCaughtUp
// when ctx ends before the pipeline caught up.
var ErrNotCaughtUp = errors.New("pipeline did not catch up")

// ErrNoSlot is returned (wrapped) by WaitCaughtUp when the replication slot
// does not exist: nothing is being captured.
var ErrNoSlot = errors.New("replication slot does not exist")

// Progress is what WaitCaughtUp is still waiting for.
type Progress struct {
	// Snapshotting is true while capture's initial snapshot is
	// unfinished, with about SnapshotRowsLeft rows still to read.
	Snapshotting     bool
	SnapshotRowsLeft int64
	// SlotBytes is the WAL between the slot's confirmed position and the
	// target position; zero once capture has passed it.
	SlotBytes int64
	// SinkLag is, per sink, the records up to the target end offsets not
	// yet committed; nil while the slot is still behind.
	SinkLag map[string]int64
}

func (p Progress) String() string {
	if p.Snapshotting {
		return fmt.Sprintf("initial snapshot: about %d rows to read", p.SnapshotRowsLeft)
	}
	if p.SinkLag == nil {
		return fmt.Sprintf("slot %d bytes behind", p.SlotBytes)
	}
	var parts []string
	for _, s := range sortedKeys(p.SinkLag) {
		parts = append(parts, fmt.Sprintf("sink %s %d records behind", s, p.SinkLag[s]))
	}
	if len(parts) == 0 {
		return "caught up"
	}
	return strings.Join(parts, ", ")
}

// WaitCaughtUp waits until everything committed in the source database
// before the call is applied by every sink, polling every poll. It takes
// the source's current WAL position as the target and waits for the slot
// to confirm it (so every change up to then is on Kafka); then it takes
// the topics' end offsets as the next target and waits for each sink's
// committed offsets to reach them. Changes made after the call are not
// waited for, so it ends under a steady write load too.
//
// progress, if not nil, is called after every poll. When ctx ends first
// the error wraps ErrNotCaughtUp and says what is left.
func (c *Collector) WaitCaughtUp(ctx context.Context, poll time.Duration, progress func(Progress)) error {
	var last Progress
	notCaughtUp := func(cause error) error {
		return fmt.Errorf("%w: %s (%v)", ErrNotCaughtUp, last, cause)
	}
	// The initial snapshot reads existing rows while capture streams, and
	// its rows go to Kafka after the WAL position of now: wait for it
	// before taking the target.
	for {
		left, unfinished, err := c.snapshotLeft(ctx)
		if ctx.Err() != nil {
			return notCaughtUp(ctx.Err())
		}
		if err != nil {
			return err
		}
		if !unfinished {
			break
		}
		last = Progress{SnapshotRowsLeft: left, Snapshotting: true}
		if progress != nil {
			progress(last)
		}
		if !sleep(ctx, poll) {
			return notCaughtUp(ctx.Err())
		}
	}
	target, err := c.currentLSN(ctx)
	if err != nil {
		return err
	}
	for {
		confirmed, ok, err := c.confirmedLSN(ctx)
		if ctx.Err() != nil {
			return notCaughtUp(ctx.Err())
		}
		if errors.Is(err, errSlotCreating) {
			if !sleep(ctx, poll) {
				return notCaughtUp(ctx.Err())
			}
			continue
		}
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %s (is capture configured with this CDCSYNC_SLOT?)", ErrNoSlot, c.cfg.Slot)
		}
		last = Progress{SlotBytes: lsnDiff(target, confirmed)}
		if progress != nil {
			progress(last)
		}
		if confirmed >= target {
			break
		}
		if !sleep(ctx, poll) {
			return notCaughtUp(ctx.Err())
		}
	}

	// Everything up to target is on Kafka now: the end offsets read after
	// this point cover it, and become the sinks' targets.
	targets := map[string]Topic{}
	for _, name := range c.topics {
		t, err := c.Topic(ctx, name)
		if ctx.Err() != nil {
			return notCaughtUp(ctx.Err())
		}
		if err != nil {
			return err
		}
		targets[name] = t
	}
	for {
		last = Progress{SinkLag: map[string]int64{}}
		done := true
		for _, s := range c.cfg.Sinks {
			sink, err := c.sink(ctx, s, targets)
			if ctx.Err() != nil {
				return notCaughtUp(ctx.Err())
			}
			if err != nil {
				return err
			}
			last.SinkLag[s] = sink.Lag
			done = done && sink.Lag == 0
		}
		if progress != nil {
			progress(last)
		}
		if done {
			return nil
		}
		if !sleep(ctx, poll) {
			return notCaughtUp(ctx.Err())
		}
	}
}

func lsnDiff(a, b pglogrepl.LSN) int64 {
	if a <= b {
		return 0
	}
	return int64(a - b)
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

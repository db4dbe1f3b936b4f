package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/internal/kafkaclient"
)

// sessionLoss ends a consumer group session early when the redis sink's
// store lost its data, so that the next session's Setup rebuilds.
type sessionLoss struct {
	mu     sync.Mutex
	cancel context.CancelFunc // of the running session's claims; nil between sessions
}

// start returns the context the session's claims consume under: the
// session's, cancelled early by end.
func (l *sessionLoss) start(sess sarama.ConsumerGroupSession) context.Context {
	ctx, cancel := context.WithCancel(sess.Context())
	l.mu.Lock()
	l.cancel = cancel
	l.mu.Unlock()
	return ctx
}

// end ends the running session, if any: its claims return, sarama leaves
// the session and the consumer joins the next one.
func (l *sessionLoss) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cancel != nil {
		l.cancel()
		l.cancel = nil
	}
}

// redisLost reacts to Redis having lost the redis sink's data while it ran
// (a script found another epoch, or the store check did): the session ends
// and the next one's Setup rebuilds every partition whose committed offset
// was applied under the lost epoch. Replay, which commits nothing, stops
// with the error instead.
func (c *consumer) redisLost(err error) {
	if c.epoch == nil {
		if c.fail != nil {
			c.fail(fmt.Errorf("%w: run the replay again", err))
		}
		return
	}
	c.log.Warn("Redis lost its data: ending the session to rebuild the row cache", "err", err)
	c.loss.end()
}

// claimContext is the context the running session's claims consume
// under (set by Setup).
func (c *consumer) claimContext() context.Context {
	c.claimCtxMu.Lock()
	defer c.claimCtxMu.Unlock()
	return c.claimCtx
}

// offsetMetadata is stored with every committed offset: the epoch the
// batches before it were applied under (redis sink), "" otherwise.
func (c *consumer) offsetMetadata() string {
	if c.epoch == nil {
		return ""
	}
	return c.epoch.current()
}

// rebuildLost runs at the start of a session of the redis sink. It loads
// the epoch (writing a new one into a Redis that has none) and rewinds to
// the oldest offset every claimed partition whose committed offset was
// applied under another epoch: Redis lost what those offsets say was
// applied, and only the whole partition can give it back. An offset
// committed without an epoch (before epochs existed) is trusted.
func (c *consumer) rebuildLost(sess sarama.ConsumerGroupSession) error {
	if c.epoch == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(sess.Context(), probeTimeout)
	defer cancel()
	cur, _, err := c.epoch.load(ctx)
	if err != nil {
		return err
	}
	sc, err := kafkaclient.Config(c.cfg.Kafka)
	if err != nil {
		return err
	}
	client, err := kafkaclient.NewClient(c.cfg.Kafka, sc)
	if err != nil {
		return err
	}
	defer client.Close()
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return fmt.Errorf("kafka admin: %w", err)
	}
	claims := sess.Claims()
	committed, err := admin.ListConsumerGroupOffsets(c.group, claims)
	if err != nil {
		return fmt.Errorf("committed offsets of %s: %w", c.group, err)
	}
	if committed.Err != sarama.ErrNoError {
		return fmt.Errorf("committed offsets of %s: %w", c.group, committed.Err)
	}
	for topic, parts := range claims {
		for _, p := range parts {
			b := committed.GetBlock(topic, p)
			if b == nil || b.Offset < 0 || b.Metadata == "" || b.Metadata == cur {
				continue
			}
			oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
			if err != nil {
				return fmt.Errorf("oldest offset of %s/%d: %w", topic, p, err)
			}
			c.log.Warn("Redis lost the row cache's data since this partition's offset was committed: rebuilding it from the partition's oldest offset",
				"topic", topic, "partition", p, "committed", b.Offset, "from", oldest)
			sess.ResetOffset(topic, p, oldest, cur)
		}
	}
	return nil
}

// isRedisLost reports whether err says Redis lost the sink's data.
func isRedisLost(err error) bool { return errors.Is(err, errRedisLost) }

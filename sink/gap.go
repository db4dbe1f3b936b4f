package sink

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// A sink must never skip records silently. Records leave a topic before a
// sink applied them when retention (cleanup.policy=delete) or DeleteRecords
// removes them while the sink is stopped or lagging: the group's committed
// offset then lies before the partition's log start, and sarama, like any
// Kafka consumer, would restart at the oldest offset it finds. A new group
// (no committed offset) on a delete-policy topic whose log start is past 0
// would likewise build a store from partial history. On a compacted topic
// (cleanup.policy=compact, the default for table topics) a new group is
// fine: compaction keeps the latest event of every key and the tombstones,
// which is all a store needs.
//
// gapGuard checks each claim before it is consumed; a claim with a gap is
// not consumed: its partition stops (the others go on) with an error that
// names the topic, partition and lost range and how to rebuild, the sink
// reports not ready, and nothing is committed for that partition, so the
// check fails the same way after a restart until an operator rebuilds.
type gapGuard struct {
	brokers []string
	sc      *sarama.Config
	group   string

	mu     sync.Mutex
	client sarama.Client
	admin  sarama.ClusterAdmin
}

// gapError is a range of a partition the sink would have skipped.
type gapError struct {
	group, topic string
	partition    int32
	from, to     int64 // the lost offsets: [from, to)
	why          string
}

func (e *gapError) Error() string {
	return fmt.Sprintf("%s/%d: offsets %d to %d were deleted from the topic before consumer group %s applied them (%s); "+
		"this partition is stopped rather than skip them. To rebuild: stop this sink, empty its store, run "+
		"`cdcsync replay snapshot` for the table so its topic holds every current row, reset the group's offsets of %s "+
		"to the earliest (kafka-consumer-groups.sh --group %s --topic %s --reset-offsets --to-earliest --execute) "+
		"and start the sink (README, \"Topics and retention\")",
		e.topic, e.partition, e.from, e.to-1, e.group, e.why, e.topic, e.group, e.topic)
}

// connect returns the guard's admin client, connecting on first use.
func (g *gapGuard) connect() (sarama.Client, sarama.ClusterAdmin, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.admin != nil {
		return g.client, g.admin, nil
	}
	client, err := sarama.NewClient(g.brokers, g.sc)
	if err != nil {
		return nil, nil, fmt.Errorf("kafka client: %w", err)
	}
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("kafka admin: %w", err)
	}
	g.client, g.admin = client, admin
	return client, admin, nil
}

func (g *gapGuard) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.admin != nil {
		_ = g.admin.Close() // closes the client too
		g.client, g.admin = nil, nil
	}
}

// check returns a *gapError when consuming the partition from initial (the
// claim's initial offset) would skip records, nil when it would not, and
// another error when it could not tell.
func (g *gapGuard) check(topic string, partition int32, initial int64) error {
	if initial != sarama.OffsetOldest {
		return nil // resumes at its committed offset, which sarama found in the log
	}
	// No committed offset, or one out of range that sarama replaced with
	// the oldest: which one is in the group's committed offsets.
	client, admin, err := g.connect()
	if err != nil {
		return err
	}
	resp, err := admin.ListConsumerGroupOffsets(g.group, map[string][]int32{topic: {partition}})
	if err != nil {
		return fmt.Errorf("committed offset of %s/%d: %w", topic, partition, err)
	}
	committed := int64(-1)
	if b := resp.GetBlock(topic, partition); b != nil {
		if b.Err != sarama.ErrNoError {
			return fmt.Errorf("committed offset of %s/%d: %w", topic, partition, b.Err)
		}
		committed = b.Offset
	}
	oldest, err := client.GetOffset(topic, partition, sarama.OffsetOldest)
	if err != nil {
		return fmt.Errorf("log start of %s/%d: %w", topic, partition, err)
	}
	gap := &gapError{group: g.group, topic: topic, partition: partition}
	switch {
	case committed >= 0 && committed < oldest:
		gap.from, gap.to, gap.why = committed, oldest, "the group's committed offset "+strconv.FormatInt(committed, 10)+" is before the log start "+strconv.FormatInt(oldest, 10)
		return gap
	case committed >= 0:
		newest, err := client.GetOffset(topic, partition, sarama.OffsetNewest)
		if err != nil {
			return fmt.Errorf("end offset of %s/%d: %w", topic, partition, err)
		}
		if committed > newest {
			gap.from, gap.to = newest, committed
			gap.why = fmt.Sprintf("the group's committed offset %d is past the partition's end %d: was the topic deleted and created again?", committed, newest)
			return gap
		}
		return nil // back in range meanwhile: re-reading from the oldest is idempotent
	case oldest == 0:
		return nil
	}
	policy, err := topicPolicy(admin, topic)
	if err != nil {
		return err
	}
	if policy == "compact" {
		return nil
	}
	gap.from, gap.to = 0, oldest
	gap.why = fmt.Sprintf("the group has no committed offset and the topic's cleanup.policy is %q, so its oldest records are gone", policy)
	return gap
}

// topicPolicy reads a topic's cleanup.policy.
func topicPolicy(admin sarama.ClusterAdmin, topic string) (string, error) {
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic, ConfigNames: []string{"cleanup.policy"}})
	if err != nil {
		return "", fmt.Errorf("cleanup.policy of %s: %w", topic, err)
	}
	for _, e := range entries {
		if e.Name == "cleanup.policy" {
			return e.Value, nil
		}
	}
	return "delete", nil // Kafka's default
}

// mayConsume checks a claim before it is consumed. It returns false, after
// the session ended, when the claim must not be consumed (a gap) or the
// check never succeeded; the partition then stays unconsumed, and nothing
// is committed for it.
func (c *consumer) mayConsume(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) bool {
	if c.gaps == nil {
		return true
	}
	// The claims' context: the session's, which the redis sink's loss
	// detection may end early (consumer_loss.go).
	ctx := sess.Context()
	if cc := c.claimContext(); cc != nil {
		ctx = cc
	}
	key := claim.Topic() + "/" + strconv.Itoa(int(claim.Partition()))
	b := newBackoff(200*time.Millisecond, c.cfg.RetryMax)
	for {
		err := c.gaps.check(claim.Topic(), claim.Partition(), claim.InitialOffset())
		if err == nil {
			c.health.gapCleared(key)
			return true
		}
		var gap *gapError
		if errors.As(err, &gap) {
			c.metrics.partitionsStopped.Inc()
			defer c.metrics.partitionsStopped.Dec()
			c.health.gapStopped(key, gap.Error())
			c.log.Error("records lost from the topic: partition stopped", "topic", gap.topic, "partition", gap.partition,
				"lost_from", gap.from, "lost_to", gap.to-1, "err", gap)
			<-ctx.Done()
			return false
		}
		c.log.Warn("cannot check the partition's start for lost records; retrying", "topic", claim.Topic(), "partition", claim.Partition(), "err", err)
		if !b.wait(ctx) {
			return false
		}
	}
}

// reportOutOfRange explains an offset that went out of range while the
// partition was being consumed (records deleted under a lagging sink):
// sarama stops the partition; the next session's check names the range.
func (c *consumer) reportOutOfRange(err error) bool {
	var ce *sarama.ConsumerError
	if !errors.Is(err, sarama.ErrOffsetOutOfRange) || !errors.As(err, &ce) {
		return false
	}
	msg := fmt.Sprintf("%s/%d: the next offset to read was deleted from the topic (retention or DeleteRecords) before this sink applied it; "+
		"the partition is stopped rather than skip records", ce.Topic, ce.Partition)
	c.health.gapStopped(ce.Topic+"/"+strconv.Itoa(int(ce.Partition)), msg)
	c.log.Error("records lost from the topic: partition stopped", "topic", ce.Topic, "partition", ce.Partition, "err", err)
	return true
}

// ErrHistoryDeleted is returned (wrapped) by Replay from the beginning of a
// topic that deletes old records and already deleted some: the store would
// be built from partial history.
var ErrHistoryDeleted = errors.New("records at the beginning of the topic were deleted")

// checkBeginning refuses a replay from the beginning of partitions whose
// oldest records a delete-policy topic has dropped. On a compacted topic
// the beginning holds the latest event of every key: a rebuild from it is
// complete.
func checkBeginning(client sarama.Client, ranges []ReplayPartition) error {
	admin, err := sarama.NewClusterAdminFromClient(client) // not closed: that would close client
	if err != nil {
		return fmt.Errorf("kafka admin: %w", err)
	}
	policies := map[string]string{}
	for _, r := range ranges {
		if r.From == 0 {
			continue
		}
		policy, ok := policies[r.Topic]
		if !ok {
			if policy, err = topicPolicy(admin, r.Topic); err != nil {
				return err
			}
			policies[r.Topic] = policy
		}
		if policy != "compact" {
			return fmt.Errorf("%w: a replay from the beginning of %s/%d would miss offsets 0 to %d (cleanup.policy %q) and build the store from partial history; "+
				"rebuild through a snapshot instead (README, \"Topics and retention\"), or give --from <offset> to replay what is left on purpose",
				ErrHistoryDeleted, r.Topic, r.Partition, r.From-1, policy)
		}
	}
	return nil
}

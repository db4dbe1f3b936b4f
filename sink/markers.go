package sink

import (
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/internal/kafkaclient"
)

// Transaction markers. With CDCSYNC_DELIVERY=exactly-once every Kafka
// transaction ends with a commit marker: an offset of its own that sarama's
// consumer skips without handing it out. A sink that commits "the offset
// after the last record" then stays one offset (or more) short of the
// partition's end forever, and status, `status --wait` and the demo never
// see it caught up. Once a claim is idle with offsets left before the high
// watermark, the sink checks whether they hold anything a read_committed
// consumer is handed; if not (markers and aborted records only), it
// commits the last stable offset.

// markerIdle is how long a claim is idle before it looks for markers.
const markerIdle = 200 * time.Millisecond

// markerWait returns a channel that fires when the claim, having handled
// everything before next, may have only markers left; nil when there is
// nothing after next, or next is not known yet.
func (c *consumer) markerWait(claim sarama.ConsumerGroupClaim, next int64) <-chan time.Time {
	if c.gaps == nil || next < 0 || claim.HighWaterMarkOffset() <= next {
		return nil
	}
	return time.After(markerIdle)
}

// stepOverMarkers marks the last stable offset when offsets [next, stable)
// hold no record the consumer would be handed, and returns the offset
// handled through. Records of an open transaction lie at or after the
// stable offset and are never stepped over.
func (c *consumer) stepOverMarkers(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim, next int64) int64 {
	client, _, err := c.gaps.connect()
	if err != nil {
		c.log.Debug("look for transaction markers", "err", err)
		return next
	}
	topic, p := claim.Topic(), claim.Partition()
	stable, err := kafkaclient.StableOffset(client, topic, p)
	if err != nil || stable <= next {
		return next
	}
	if _, found, err := kafkaclient.FirstCommitted(client, topic, p, next, stable); err != nil || found {
		// A record arrives through the claim soon; or the broker could
		// not say: keep the offset.
		return next
	}
	sess.MarkOffset(topic, p, stable, c.offsetMetadata())
	c.metrics.setLag(topic, p, max(claim.HighWaterMarkOffset()-stable, 0))
	return stable
}

// onlyMarkersLeft reports whether offsets [from, p.To) of a replayed
// partition hold nothing a read_committed consumer is handed.
func (r *replayer) onlyMarkersLeft(p ReplayPartition, from int64) bool {
	if from >= p.To {
		return true
	}
	_, found, err := kafkaclient.FirstCommitted(r.client, p.Topic, p.Partition, from, p.To)
	return err == nil && !found
}

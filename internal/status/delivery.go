package status

import (
	"context"

	"github.com/cdcsync/cdcsync/internal/kafkaclient"
	"github.com/cdcsync/cdcsync/pipeline"
)

// Delivery is capture's delivery mode as the topics show it: a slot whose
// capture runs exactly once has a checkpoint on <prefix>.capture.checkpoint
// (README: Exactly-once topics).
type Delivery struct {
	// Mode is "exactly-once" when the slot has a checkpoint, else
	// "at-least-once".
	Mode string `json:"mode"`
	// CheckpointLSN is the end of what the topics hold, read_committed
	// (exactly-once only).
	CheckpointLSN string `json:"checkpoint_lsn,omitempty"`
	SourceEpoch   uint32 `json:"checkpoint_source_epoch,omitempty"`
}

// delivery reads the slot's exactly-once checkpoint, if any.
func (c *Collector) delivery(ctx context.Context) (Delivery, error) {
	if err := ctx.Err(); err != nil {
		return Delivery{}, err
	}
	value, found, err := kafkaclient.LastCommittedValue(c.client, pipeline.CheckpointTopic(c.cfg.TopicPrefix), 0, []byte(c.cfg.Slot))
	if err != nil || !found {
		return Delivery{Mode: "at-least-once"}, err
	}
	cp, err := pipeline.DecodeCheckpoint(value)
	if err != nil {
		return Delivery{}, err
	}
	return Delivery{Mode: "exactly-once", CheckpointLSN: cp.LSN.String(), SourceEpoch: cp.Epoch}, nil
}

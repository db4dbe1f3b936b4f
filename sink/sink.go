// Package sink consumes change topics and applies them to the inventory
// store (Postgres) and the Redis caches, idempotently by stream position.
package sink

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/config"
)

// Run consumes and applies changes for the sinks named in cfg.Sinks until
// ctx is cancelled; it commits offsets only for applied batches.
func Run(ctx context.Context, cfg config.Sink, logger *slog.Logger, reg prometheus.Registerer) error {
	return errors.New("sink: not implemented yet")
}

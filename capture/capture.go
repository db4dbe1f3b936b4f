// Package capture streams committed changes from Postgres logical
// replication (pgoutput) into Kafka: slot and publication set-up, pgoutput
// decoding, the initial snapshot and the acknowledgement of LSNs.
package capture

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/config"
)

// Run streams changes until ctx is cancelled. It returns nil after a clean
// shutdown (producer flushed, final LSN confirmed).
func Run(ctx context.Context, cfg config.Capture, logger *slog.Logger, reg prometheus.Registerer) error {
	return errors.New("capture: not implemented yet")
}

package main

import (
	"context"
	"os"
	"runtime/debug"

	"github.com/cdcsync/cdcsync/capture"
	"github.com/cdcsync/cdcsync/config"
)

func captureCommand() command {
	return command{
		Name:    "capture",
		Summary: "daemon: stream committed Postgres changes into Kafka (one topic per table)",
		Config:  func() any { return &config.Capture{} },
		Run: func(ctx context.Context, st *streams, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			var cfg config.Capture
			if err := loadConfig(&cfg); err != nil {
				return err
			}
			if os.Getenv("GOGC") == "" {
				// Capture's live heap is small and bounded by
				// CDCSYNC_MAX_IN_FLIGHT, while it allocates per row: a
				// larger GC target trades a few MiB for ~20% throughput
				// (measured with `go run ./test/bench capture`).
				debug.SetGCPercent(300)
			}
			if os.Getenv("GOMEMLIMIT") == "" {
				// With large rows the in-flight bytes are most of the
				// heap, and 300% headroom on them is too much: a soft
				// limit of twice the bound (the messages, and the
				// producer's encoded copy of a request) plus a base
				// makes the GC work harder only when that much is live.
				debug.SetMemoryLimit(2*cfg.MaxInFlightBytes + 64<<20)
			}
			spec := daemonSpec{Name: "capture", Spec: &cfg, Log: cfg.Log, HTTP: cfg.HTTP}
			return runDaemon(ctx, st, spec, func(ctx context.Context, d *daemon) error {
				return capture.Run(ctx, cfg, d.Logger, d.Registry, capture.WithReadiness(d.Ready))
			})
		},
	}
}

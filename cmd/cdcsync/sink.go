package main

import (
	"context"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/httpserver"
	"github.com/cdcsync/cdcsync/sink"
)

func sinkCommand() command {
	return command{
		Name:    "sink",
		Summary: "daemon: apply change topics to the sinks in CDCSYNC_SINKS (inventory, redis)",
		Config:  func() any { return &config.Sink{} },
		Run: func(ctx context.Context, st *streams, args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			var cfg config.Sink
			if err := loadConfig(&cfg); err != nil {
				return err
			}
			// /applied reports (and waits for) the sinks' applied-through
			// positions: read-your-writes over HTTP.
			positions := sink.NewAppliedPositions()
			spec := daemonSpec{Name: "sink", Spec: &cfg, Log: cfg.Log, HTTP: cfg.HTTP,
				Routes: []httpserver.Route{{Pattern: "GET /applied", Handler: positions.Handler()}}}
			return runDaemon(ctx, st, spec, func(ctx context.Context, d *daemon) error {
				return sink.Run(ctx, cfg, d.Logger, d.Registry, sink.WithReadiness(d.Ready), sink.WithAppliedPositions(positions))
			})
		},
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/httpserver"
	"github.com/cdcsync/cdcsync/internal/logging"
)

// daemon is what a long-running command gets from runDaemon.
type daemon struct {
	Logger   *slog.Logger
	Registry *prometheus.Registry
	// Ready is served on /readyz; the daemon reports through it.
	Ready *httpserver.Readiness
}

// daemonSpec describes a daemon's already loaded and validated settings.
type daemonSpec struct {
	Name string
	Spec any // pointer to the configuration struct, for the start-up log
	Log  config.Log
	HTTP config.HTTP
	// Routes are served beside /metrics, /healthz and /readyz.
	Routes []httpserver.Route
}

// runDaemon sets up logging, metrics and the HTTP endpoints, then runs fn
// until it returns. A failure is logged and returned as a loggedError.
func runDaemon(ctx context.Context, st *streams, s daemonSpec, fn func(context.Context, *daemon) error) error {
	logger, err := logging.New(s.Log, st.Stderr)
	if err != nil {
		return err // unreachable after Validate; reported as exit 1
	}
	logger = logger.With("command", s.Name)
	logStart(logger, s.Spec)

	d := &daemon{Logger: logger, Registry: httpserver.NewRegistry(), Ready: httpserver.NewReadiness()}
	d.Registry.MustRegister(d.Ready.Collector())
	var srv *httpserver.Server
	if s.HTTP.Addr != "" {
		srv, err = httpserver.Listen(s.HTTP.Addr, httpserver.Handler(d.Registry, d.Ready, s.Routes...), logger)
		if err != nil {
			logger.Error("cannot serve metrics and health endpoints", "err", err)
			return &loggedError{err: err}
		}
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	httpDone := make(chan error, 1)
	if srv != nil {
		go func() {
			err := srv.Run(runCtx)
			if err != nil && runCtx.Err() == nil {
				// Without its endpoints the daemon cannot be watched
				// or probed; stop it rather than run blind.
				logger.Error("http server failed; stopping", "err", err)
				cancel()
			}
			httpDone <- err
		}()
	} else {
		httpDone <- nil
	}

	err = fn(runCtx, d)
	cancel()
	err = errors.Join(err, <-httpDone)
	var cfgErr *config.Error
	if errors.As(err, &cfgErr) {
		// A configuration problem found only at run time: main prints
		// it as the usual one line and exits 2.
		return err
	}
	if err != nil {
		logger.Error(s.Name+" stopped with an error", "err", err)
		return &loggedError{err: err}
	}
	logger.Info(s.Name + " stopped")
	return nil
}

// logStart logs the variables that are set, redacted, so that an operator
// sees what the process actually runs with, and warns about CDCSYNC_
// variables the command does not read (typos, or meant for another
// command).
func logStart(logger *slog.Logger, spec any) {
	var attrs []any
	for _, v := range config.Vars(spec) {
		if val, ok := os.LookupEnv(v.Name); ok {
			attrs = append(attrs, v.Name, v.ShownValue(val))
		}
	}
	logger.Info("starting", attrs...)
	for _, name := range config.Unknown(spec, os.Environ()) {
		logger.Warn("ignoring unknown variable", "var", name)
	}
}

// loadConfig reads and validates spec; problems are *config.Error (exit 2).
func loadConfig(spec any) error {
	if err := config.Load(spec); err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			return err
		}
		return fmt.Errorf("read configuration: %w", err)
	}
	return nil
}

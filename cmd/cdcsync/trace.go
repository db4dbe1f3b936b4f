package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/trace"
)

// traceOptions are the command-line options of `cdcsync trace`.
type traceOptions struct {
	table, key string
	json       bool
}

func (o *traceOptions) flags() *flag.FlagSet {
	fs := newFlags("trace")
	fs.StringVar(&o.table, "table", "", "the row's table, schema.table (required)")
	fs.StringVar(&o.key, "key", "", `the row's key, a JSON object of its key columns, e.g. '{"id":42}' (required)`)
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	return fs
}

// Exit status of trace when the row is in flight (0 in sync, 1 drift, 2
// errors).
const exitInFlight = 3

func traceCommand() command {
	return command{
		Name: "trace",
		Summary: "follow one row through the pipeline: SQL now, its records on Kafka, each store's copy and position; " +
			"verdict in sync (exit 0), drift (1) or in flight (3)",
		Config: func() any { return &config.Verify{} },
		Flags:  func() *flag.FlagSet { return (&traceOptions{}).flags() },
		Run: func(ctx context.Context, st *streams, args []string) error {
			var opts traceOptions
			if err := parseFlags(opts.flags(), args); err != nil {
				return err
			}
			if opts.table == "" || opts.key == "" {
				return &usageError{msg: `--table and --key are required, e.g. --table public.orders --key '{"id":42}'`}
			}
			if err := trace.CheckArgs(opts.table, opts.key); err != nil {
				return &usageError{msg: err.Error()}
			}
			var cfg config.Verify
			if err := loadConfig(&cfg); err != nil {
				return err
			}
			r, err := trace.Run(ctx, cfg, opts.table, opts.key)
			if errors.Is(err, trace.ErrUsage) {
				return &usageError{msg: err.Error()}
			}
			if err != nil {
				return &exitError{Code: exitVerifyError, Err: err}
			}
			if opts.json {
				err = writeJSON(st.Stdout, r)
			} else {
				err = trace.WriteText(st.Stdout, r)
			}
			if err != nil {
				return &exitError{Code: exitVerifyError, Err: fmt.Errorf("write report: %w", err)}
			}
			switch r.Verdict.State {
			case trace.Drift:
				return &exitError{Code: exitDrift}
			case trace.InFlight:
				return &exitError{Code: exitInFlight}
			}
			return nil
		},
	}
}

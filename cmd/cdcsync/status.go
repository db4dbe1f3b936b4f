package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/status"
)

// statusOptions are the command-line options of `cdcsync status`.
type statusOptions struct {
	json bool
}

func (o *statusOptions) flags() *flag.FlagSet {
	fs := newFlags("status")
	fs.BoolVar(&o.json, "json", false, "print JSON instead of tables")
	return fs
}

func statusCommand() command {
	return command{
		Name:    "status",
		Summary: "slot lag, topic end offsets, consumer lag per sink, and unfinished backfills (initial snapshot progress: rows, rate, ETA)",
		Config:  func() any { return &config.Status{} },
		Flags:   func() *flag.FlagSet { return (&statusOptions{}).flags() },
		Run: func(ctx context.Context, st *streams, args []string) error {
			var opts statusOptions
			if err := parseFlags(opts.flags(), args); err != nil {
				return err
			}
			var cfg config.Status
			if err := loadConfig(&cfg); err != nil {
				return err
			}
			c, err := status.New(ctx, cfg)
			if err != nil {
				return err
			}
			defer c.Close()
			r, err := c.Collect(ctx)
			if err != nil {
				return err
			}
			if opts.json {
				return writeJSON(st.Stdout, r)
			}
			return status.WriteText(st.Stdout, r)
		},
	}
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

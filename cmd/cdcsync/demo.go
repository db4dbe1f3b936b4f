package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"time"

	"golang.org/x/term"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/demo"
)

// demoOptions are the command-line options of `cdcsync demo`; set, they
// win over the variables.
type demoOptions struct {
	duration time.Duration
	rate     int
}

func (o *demoOptions) flags() *flag.FlagSet {
	fs := newFlags("demo")
	fs.DurationVar(&o.duration, "duration", -1, "stop by itself after this long (e.g. 30s); 0 runs until Ctrl-C (default CDCSYNC_DEMO_DURATION)")
	fs.IntVar(&o.rate, "rate", 0, "order writes per second (default CDCSYNC_DEMO_RATE)")
	return fs
}

func demoCommand() command {
	return command{
		Name: "demo",
		Summary: "one-command local run: throwaway Postgres, Redis and development broker, capture, sinks, " +
			"generated orders, live throughput, lag and drift",
		Config: func() any { return &config.Demo{} },
		Flags:  func() *flag.FlagSet { return (&demoOptions{}).flags() },
		Run: func(ctx context.Context, st *streams, args []string) error {
			opts := demoOptions{}
			fs := opts.flags()
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			var cfg config.Demo
			if err := loadConfig(&cfg); err != nil {
				return err
			}
			fs.Visit(func(f *flag.Flag) {
				switch f.Name {
				case "duration":
					cfg.Duration = opts.duration
				case "rate":
					cfg.Rate = opts.rate
				}
			})
			if cfg.Duration < 0 {
				return &usageError{msg: "--duration must not be negative"}
			}
			if cfg.Rate <= 0 {
				return &usageError{msg: "--rate must be a positive number"}
			}
			res, err := demo.Run(ctx, demo.Options{
				Config: cfg, Out: st.Stdout, Err: st.Stderr, Terminal: canRedraw(st.Stdout),
			})
			var missing *demo.MissingError
			if errors.As(err, &missing) {
				return &exitError{Code: exitUsage, Err: err}
			}
			if err != nil {
				return err
			}
			if res == nil {
				return nil // stopped before it started generating
			}
			if res.Final.Drifted > 0 {
				return &exitError{Code: exitDrift}
			}
			return nil
		},
	}
}

// canRedraw reports whether w is a terminal, where the demo redraws its
// view in place. (A character device is not enough: /dev/null is one.)
func canRedraw(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

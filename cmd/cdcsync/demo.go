package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/signal"
	"syscall"
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
			gone, stopWatching := watchHangup()
			defer stopWatching()
			res, err := demo.Run(ctx, demo.Options{
				Config: cfg, Out: st.Stdout, Err: st.Stderr, Terminal: canRedraw(st.Stdout), Gone: gone,
			})
			var missing *demo.MissingError
			if errors.As(err, &missing) {
				return &exitError{Code: exitUsage, Err: err}
			}
			if err != nil {
				return err
			}
			if res == nil || res.Final == nil {
				return nil // stopped before it started generating, or abandoned
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

// watchHangup returns a channel closed on SIGHUP (the demo's terminal
// closed) or SIGPIPE. Without this the default action of SIGHUP kills the
// demo on the spot and leaves its Postgres cluster and redis-server, which
// run in process groups of their own, behind with their temp dirs. Asking
// for SIGPIPE also turns a write to a closed pipe (the pager the demo was
// piped into exited) from a fatal signal into an EPIPE error, which the
// demo sees on its output and stops cleanly.
func watchHangup() (<-chan struct{}, func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGPIPE)
	gone := make(chan struct{})
	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-sigs:
				if sig == syscall.SIGPIPE {
					// A broken pipe that is not the demo's output (the
					// write error says when it is): keep going.
					continue
				}
				close(gone)
				return
			case <-done:
				return
			}
		}
	}()
	return gone, func() {
		signal.Stop(sigs)
		close(done)
	}
}

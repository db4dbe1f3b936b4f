package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/status"
	"github.com/cdcsync/cdcsync/internal/verify"
)

// verifyOptions are the command-line options of `cdcsync verify`.
type verifyOptions struct {
	json bool
	wait time.Duration
}

func (o *verifyOptions) flags() *flag.FlagSet {
	fs := newFlags("verify")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.DurationVar(&o.wait, "wait", 0, "first wait up to this long (e.g. 2m) for capture and the sinks to catch up with\n"+
		"everything committed in the order database so far; 0 compares at once")
	return fs
}

// Exit statuses of verify: 0 only without drift.
const (
	exitDrift       = 1
	exitVerifyError = 2
)

func verifyCommand() command {
	return command{
		Name: "verify",
		Summary: "compare the order database with the inventory store and Redis; " +
			"exit 0 only without drift, 1 with drift, 2 on errors",
		Config: func() any { return &config.Verify{} },
		Flags:  func() *flag.FlagSet { return (&verifyOptions{}).flags() },
		Run: func(ctx context.Context, st *streams, args []string) error {
			var opts verifyOptions
			fs := opts.flags()
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			if opts.wait < 0 {
				return &usageError{msg: "--wait must not be negative"}
			}
			var cfg config.Verify
			if err := loadConfig(&cfg); err != nil {
				return err
			}
			r, err := runVerify(ctx, st, cfg, opts)
			if err != nil {
				// Unlike the daemons, every failure is status 2 here, so
				// that 1 always means drift.
				return &exitError{Code: exitVerifyError, Err: err}
			}
			if opts.json {
				err = writeJSON(st.Stdout, r)
			} else {
				err = verify.WriteText(st.Stdout, r)
			}
			if err != nil {
				return &exitError{Code: exitVerifyError, Err: fmt.Errorf("write report: %w", err)}
			}
			if r.Drifted > 0 {
				return &exitError{Code: exitDrift}
			}
			return nil
		},
	}
}

func runVerify(ctx context.Context, st *streams, cfg config.Verify, opts verifyOptions) (*verify.Report, error) {
	if opts.wait > 0 {
		if err := waitCaughtUp(ctx, st.Stderr, cfg.StatusConfig(), opts.wait); err != nil {
			return nil, err
		}
	}
	v, err := verify.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	return v.Run(ctx)
}

// waitCaughtUp waits up to timeout for the pipeline to catch up, telling
// the operator on w what it waits for every few seconds.
func waitCaughtUp(ctx context.Context, w io.Writer, cfg config.Status, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := status.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	var last time.Time
	err = c.WaitCaughtUp(ctx, 250*time.Millisecond, func(p status.Progress) {
		if time.Since(last) >= 5*time.Second {
			last = time.Now()
			fmt.Fprintf(w, "cdcsync verify: waiting for the pipeline to catch up: %s\n", p)
		}
	})
	if err != nil {
		return fmt.Errorf("--wait %s: %w", timeout, err)
	}
	fmt.Fprintf(w, "cdcsync verify: pipeline caught up after %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

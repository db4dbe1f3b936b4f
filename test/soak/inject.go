package soak

import (
	"context"
	"fmt"
	"syscall"
	"time"
)

// inject carries out one fault from start to end: it stops (or pauses)
// the component, waits the fault's downtime and starts (or continues) it.
// A returned error is a finding (a daemon that did not stop cleanly, a
// service that did not come back), not a reason to stop the soak.
func (r *rig) inject(ctx context.Context, f Fault) error {
	switch f.Target {
	case TargetCapture:
		err := stopDaemon(r.capture, f.Action)
		sleep(ctx, f.Down)
		r.startCapture()
		return err
	case TargetSink:
		if f.Action == ActionPause {
			return r.pause(ctx, f)
		}
		// The sink's counters die with it: read them first. A kill loses
		// what it counted between this read and the signal.
		r.scrapeSink(f.Instance)
		err := stopDaemon(r.sinks[f.Instance], f.Action)
		sleep(ctx, f.Down)
		r.startSink(f.Instance)
		return err
	case TargetBroker:
		err := stopDaemon(r.broker, f.Action)
		sleep(ctx, f.Down)
		r.startBroker()
		return err
	case TargetOrderDB, TargetInventoryDB:
		pg := r.orderPG
		if f.Target == TargetInventoryDB {
			pg = r.invPG
		}
		var err error
		if f.Action == ActionKill {
			err = pg.Kill()
		} else {
			err = pg.Stop()
		}
		sleep(ctx, f.Down)
		if serr := pg.Start(); serr != nil {
			return fmt.Errorf("%s did not start again: %w", f.Target, serr)
		}
		return err
	case TargetRedis:
		var err error
		if f.Action == ActionKill {
			err = r.redis.Kill()
		} else {
			err = r.redis.Stop()
		}
		sleep(ctx, f.Down)
		if serr := r.redis.Start(); serr != nil {
			return fmt.Errorf("redis did not start again: %w", serr)
		}
		return err
	}
	return fmt.Errorf("unknown fault target %q", f.Target)
}

// pause stops a sink with SIGSTOP for longer than the consumer session
// timeout: the group evicts it and gives its partitions to the other sink;
// on SIGCONT the process finds its session gone, with whatever batch it was
// applying still in hand.
func (r *rig) pause(ctx context.Context, f Fault) error {
	p := r.sinks[f.Instance]
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("SIGSTOP %s: %w", f.Component(), err)
	}
	sleep(ctx, f.Down)
	if err := p.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("SIGCONT %s: %w", f.Component(), err)
	}
	return nil
}

// sleep waits d; a cancelled ctx cuts it short but a fault still ends with
// its component started again.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/logging"
	"github.com/cdcsync/cdcsync/sink"
)

// replayConfig is what `cdcsync replay --help` and the README list: the
// sink's variables, which 'replay topic' reads, and the capture variables
// 'replay snapshot' uses. It is never loaded: each subcommand loads its
// own configuration (topicConfig, config.Capture), and a test keeps these
// fields equal to config.Capture's.
type replayConfig struct {
	config.Sink
	SourceURL         string `envconfig:"SOURCE_URL" desc:"replay snapshot (required there): order database, postgres URL" secret:"url"`
	Slot              string `envconfig:"SLOT" default:"cdcsync" desc:"replay snapshot: slot of the capture daemon that runs the backfill"`
	Publication       string `envconfig:"PUBLICATION" default:"cdcsync" desc:"replay snapshot: capture's publication, which must hold the tables"`
	StateSchema       string `envconfig:"STATE_SCHEMA" default:"cdcsync" desc:"replay snapshot: schema of capture's state, where backfills are requested"`
	SnapshotChunkSize int    `envconfig:"SNAPSHOT_CHUNK_SIZE" default:"10000" desc:"replay snapshot: rows per primary-key chunk unless --chunk-size"`
}

// topicConfig is the sink's configuration with CDCSYNC_SINKS replaced by
// --sink before it is validated: 'replay topic' applies to the one sink it
// is given, and only that sink's store must be configured.
type topicConfig struct {
	config.Sink
	sink string
}

// Validate implements config.Validator.
func (c *topicConfig) Validate() error {
	c.Sinks = []string{c.sink}
	return c.Sink.Validate()
}

func replayTopic(ctx context.Context, st *streams, args []string) error {
	fs := newFlags("replay topic")
	sinkName := fs.String("sink", "", "")
	fromArg := fs.String("from", "", "")
	toArg := fs.String("to", "end", "")
	if err := fs.Parse(args); err != nil {
		return &usageError{msg: err.Error() + "\n" + replayUsage}
	}
	if fs.NArg() > 0 {
		return &usageError{msg: fmt.Sprintf("unexpected argument %q\n%s", fs.Arg(0), replayUsage)}
	}
	switch *sinkName {
	case config.SinkInventory, config.SinkRedis:
	case "":
		return &usageError{msg: "--sink is required: inventory or redis"}
	default:
		return &usageError{msg: fmt.Sprintf("--sink must be inventory or redis, got %q", *sinkName)}
	}
	if *fromArg == "" {
		return &usageError{msg: "--from is required: beginning, an offset or an RFC 3339 time such as 2024-05-01T12:00:00Z"}
	}
	from, err := sink.ParseBound(*fromArg)
	if err != nil {
		return &usageError{msg: "--from: " + err.Error()}
	}
	to, err := sink.ParseBound(*toArg)
	if err != nil {
		return &usageError{msg: "--to: " + err.Error()}
	}
	if sink.EmptyRange(from, to) {
		return &usageError{msg: fmt.Sprintf("--from %s --to %s is an empty range: --to must come after --from", from, to)}
	}

	cfg := topicConfig{sink: *sinkName}
	if err := loadConfig(&cfg); err != nil {
		return err
	}
	logger, err := logging.New(cfg.Log, st.Stderr)
	if err != nil {
		return err
	}
	logger = logger.With("command", "replay topic")

	// Replay reports after every batch; the view redraws on its own clock.
	var (
		mu          sync.Mutex
		done, total int64
	)
	show := func(v *progressView) {
		mu.Lock()
		p := progress{done: done, total: total, current: *sinkName + " sink", status: "applying", unit: "messages"}
		mu.Unlock()
		if p.total == 0 || p.done == p.total {
			return // not started, or finished: the summary follows
		}
		v.show(time.Now(), p)
	}
	view := newProgressView(st.Stdout)
	stopView := make(chan struct{})
	var viewDone sync.WaitGroup
	viewDone.Go(func() {
		t := time.NewTicker(view.interval)
		defer t.Stop()
		for {
			select {
			case <-stopView:
				return
			case <-t.C:
				show(view)
			}
		}
	})

	started := time.Now()
	stats, err := sink.Replay(ctx, cfg.Sink, *sinkName, from, to, logger, func(d, t int64) {
		mu.Lock()
		done, total = d, t
		mu.Unlock()
	})
	close(stopView)
	viewDone.Wait()
	view.clear()
	switch {
	case err != nil && ctx.Err() != nil:
		fmt.Fprintf(st.Stdout, "interrupted after %s of %s messages; nothing is left half-done: run it again (applying twice changes nothing)\n",
			groupDigits(done), groupDigits(total))
		return &exitError{Code: 130}
	case err != nil:
		return err
	}
	writeReplaySummary(st.Stdout, stats, from, to, time.Since(started))
	return nil
}

// writeReplaySummary says what a finished replay did.
func writeReplaySummary(w io.Writer, s sink.ReplayStats, from, to sink.Bound, elapsed time.Duration) {
	var topics []string
	for _, p := range s.Partitions {
		if !slices.Contains(topics, p.Topic) {
			topics = append(topics, p.Topic)
		}
	}
	if s.Total() == 0 {
		fmt.Fprintf(w, "nothing to replay: %s holds no records from %s to %s\n", strings.Join(topics, ", "), from, to)
		return
	}
	fmt.Fprintf(w, "replayed %s messages of %s to the %s sink in %s: %s applied, %s already there or superseded, %s tombstones",
		groupDigits(s.Messages), strings.Join(topics, ", "), s.Sink, elapsed.Round(100*time.Millisecond),
		groupDigits(s.Applied), groupDigits(s.Skipped), groupDigits(s.Tombstones))
	if s.DeadLettered > 0 {
		fmt.Fprintf(w, ", %s dead-lettered to %s", groupDigits(s.DeadLettered), strings.Join(s.DeadLetterTopics, ", "))
	}
	if s.AlreadyDeadLettered > 0 {
		fmt.Fprintf(w, ", %s unappliable and already in the dead-letter topic (not written again)", groupDigits(s.AlreadyDeadLettered))
	}
	fmt.Fprintln(w)
}

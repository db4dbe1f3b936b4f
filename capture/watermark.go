package capture

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"

	"github.com/cdcsync/cdcsync/pipeline"
)

// watermarkRefresh is how often an unchanged watermark is written again
// when only its time moved (an idle source), so that the sinks' freshness
// stays current instead of growing while nothing happens.
const watermarkRefresh = time.Second

// noWaitLimit bounds how long the stream waits for the producer to take a
// commit's watermarks (exactly-once writes them from the stream goroutine).
const noWaitLimit = 100 * time.Millisecond

// idleWatermarkInterval spaces watermarks that only follow the server's
// WAL position (keepalives) with no captured commit behind them. Without
// it, a sink whose store lives on the source's Postgres server would make
// WAL with every watermark it records, which moves the position, which
// makes the next watermark: a loop as fast as the pipeline. A token past
// the last captured commit waits at most this long (plus the keepalive).
const idleWatermarkInterval = 100 * time.Millisecond

// sourceClock remembers when the source was at which LSN: the stream
// observes each commit (its end LSN and commit time) and each keepalive
// (the server's WAL position and time), and the watermarker asks for the
// time of the newest observation at or before the LSN it confirms.
type sourceClock struct {
	mu   sync.Mutex
	obs  []lsnTime // increasing LSN, not yet consumed by asOf
	base lsnTime   // newest observation asOf consumed
}

type lsnTime struct {
	lsn    pglogrepl.LSN
	at     time.Time
	commit bool // a captured transaction's commit, not a keepalive
}

// maxClockObservations bounds the memory of a clock whose watermarker is
// slow: older observations are dropped, which only makes asOf older.
const maxClockObservations = 1 << 16

// observe records that the source was at lsn at time at; commit says it
// was a captured transaction's commit.
func (c *sourceClock) observe(lsn pglogrepl.LSN, at time.Time, commit bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.obs); n > 0 && c.obs[n-1].lsn >= lsn {
		if c.obs[n-1].lsn == lsn && at.After(c.obs[n-1].at) {
			c.obs[n-1].at = at
		}
		c.obs[n-1].commit = c.obs[n-1].commit || commit
		return
	}
	if len(c.obs) >= maxClockObservations {
		c.obs = append(c.obs[:0], c.obs[len(c.obs)/2:]...)
	}
	c.obs = append(c.obs, lsnTime{lsn, at, commit})
}

// asOf returns when the source was last seen at or before lsn (zero when
// never), and whether a captured commit is among the observations it
// passed; it forgets them.
func (c *sourceClock) asOf(lsn pglogrepl.LSN) (at time.Time, commit bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for n < len(c.obs) && c.obs[n].lsn <= lsn {
		if c.obs[n].at.After(c.base.at) {
			c.base = c.obs[n]
		}
		commit = commit || c.obs[n].commit
		n++
	}
	c.obs = append(c.obs[:0], c.obs[n:]...)
	return c.base.at, commit
}

// watermarkMeta marks a watermark message: the partitioner sends it to the
// partition it names, and its acknowledgement concerns no tracked change.
type watermarkMeta struct{}

// partitioner hashes keys (per-key order) except for watermark messages,
// which go to the partition they are addressed to.
type partitioner struct{ hash sarama.Partitioner }

func newPartitioner(topic string) sarama.Partitioner {
	return &partitioner{hash: sarama.NewHashPartitioner(topic)}
}

func (p *partitioner) Partition(msg *sarama.ProducerMessage, n int32) (int32, error) {
	if _, ok := msg.Metadata.(*watermarkMeta); ok {
		if msg.Partition < 0 || msg.Partition >= n {
			return -1, sarama.ErrInvalidPartition
		}
		return msg.Partition, nil
	}
	return p.hash.Partition(msg, n)
}

func (p *partitioner) RequiresConsistency() bool { return p.hash.RequiresConsistency() }

// watermarker writes watermarks (pipeline.Watermark) to every partition of
// the table topics: whenever the tracker's confirmed LSN has moved, at most
// once per interval, and once a second while only the source's time moves.
// It only ever writes an LSN whose messages Kafka has all acknowledged, so
// a watermark lands after every change it covers, even when an unconfirmed
// message later fails and is sent again by a new session.
type watermarker struct {
	log      *slog.Logger
	prod     *producer
	tracker  *pipeline.Tracker
	clock    *sourceClock
	topics   []string
	interval time.Duration
	// noWait (exactly-once: the stream goroutine writes the watermarks)
	// gives up on a watermark rather than wait for room in the
	// producer: the stream must go on answering Postgres, and a watermark
	// not written loses nothing (the next one follows).
	noWait bool
	// key is the record key of a partition's watermarks: wrapped in
	// JsonConverter's envelope when the topics are.
	key func(partition int32) []byte
	// epoch is the session's source epoch, which every watermark
	// carries: the sinks compare it before the LSN.
	epoch uint32
	// hold reports a topic whose table's initial snapshot is unfinished
	// (its rows that existed before the slot are not all on Kafka, so no
	// LSN is complete for it yet), and every topic while a re-snapshot
	// after a lost slot is not confirmed past its end at lsn (recovery.go).
	hold func(topic string, lsn pglogrepl.LSN) bool

	last     pglogrepl.LSN
	lastAsOf time.Time
	lastSent time.Time
	// commits is set while a captured commit is covered by the confirmed
	// LSN but not yet by a watermark: that one goes out at once.
	commits bool
}

// run writes watermarks until ctx ends. It must end before the producer
// closes.
func (w *watermarker) run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lsn := w.tracker.Confirmed()
		asOf, ok := w.prepare(lsn)
		if ok && !w.emit(ctx, lsn, asOf) {
			return
		}
	}
}

// prepare reports whether a watermark for lsn is due now, and its time.
func (w *watermarker) prepare(lsn pglogrepl.LSN) (time.Time, bool) {
	asOf, commits := w.clock.asOf(lsn)
	w.commits = w.commits || commits
	return asOf, w.due(lsn, asOf, time.Now())
}

// emit writes the watermark prepare found due; false when ctx ended first.
func (w *watermarker) emit(ctx context.Context, lsn pglogrepl.LSN, asOf time.Time) bool {
	if !w.send(ctx, lsn, asOf) {
		return false
	}
	w.last, w.lastAsOf, w.lastSent, w.commits = lsn, asOf, time.Now(), false
	return true
}

// due says whether a watermark for lsn (as of asOf) is to be written now.
// Until the stream observed the source (a commit or a keepalive, within a
// status interval) the time of lsn is unknown: wait rather than claim a
// freshness nobody saw.
func (w *watermarker) due(lsn pglogrepl.LSN, asOf, now time.Time) bool {
	switch {
	case lsn == 0 || asOf.IsZero():
		return false
	case lsn > w.last:
		return w.commits || now.Sub(w.lastSent) >= idleWatermarkInterval
	default:
		return asOf.Sub(w.lastAsOf) >= watermarkRefresh
	}
}

// send produces one watermark per partition of every table topic; false
// when ctx ended first.
func (w *watermarker) send(ctx context.Context, lsn pglogrepl.LSN, asOf time.Time) bool {
	var giveUp *time.Timer // noWait: bounds the whole send
	for _, topic := range w.topics {
		if w.hold != nil && w.hold(topic, lsn) {
			continue
		}
		parts, err := w.prod.client.Partitions(topic)
		if err != nil {
			w.log.Debug("watermark: partitions unknown", "topic", topic, "err", err)
			continue
		}
		wm := pipeline.Watermark{Epoch: w.epoch, LSN: lsn, AsOf: asOf, Partitions: int32(len(parts))}
		headers := wm.Headers()
		for _, p := range parts {
			msg := &sarama.ProducerMessage{
				Topic: topic, Partition: p, Key: sarama.ByteEncoder(w.key(p)),
				Headers: headers, Metadata: &watermarkMeta{},
			}
			if w.noWait {
				// sarama's input channel is unbuffered: a send that does
				// not wait at all reaches the first partition only, and a
				// partition without watermarks holds every read-your-
				// writes wait. Wait a little; a broker that does not take
				// them gets them at the next commit.
				if giveUp == nil {
					giveUp = time.NewTimer(noWaitLimit)
					defer giveUp.Stop()
				}
				select {
				case w.prod.ap.Input() <- msg:
				case <-giveUp.C:
					return false
				case <-ctx.Done():
					return false
				}
				continue
			}
			select {
			case w.prod.ap.Input() <- msg:
			case <-ctx.Done():
				return false
			}
		}
	}
	return true
}

// startWatermarks runs a watermarker over the session's table topics and
// returns the function that stops it and waits for it (idempotent). A
// zero interval writes none.
func (c *capturer) startWatermarks(ctx context.Context, st *stream, prod *producer, tables []tableInfo, router *OutboxRouter) func() {
	if c.cfg.WatermarkInterval <= 0 {
		return func() {}
	}
	var topics []string
	tableOf := map[string]string{}
	for _, t := range tables {
		if !router.IsOutboxTable(t.Schema, t.Name) {
			topic := pipeline.Topic(c.cfg.TopicPrefix, t.Schema, t.Name)
			topics = append(topics, topic)
			tableOf[topic] = t.String()
		}
	}
	w := &watermarker{log: c.log, prod: prod, tracker: c.tracker, clock: st.clock, topics: topics, interval: c.cfg.WatermarkInterval,
		epoch: st.decoder.src.Epoch, key: pipeline.WatermarkKey,
		hold: func(topic string, lsn pglogrepl.LSN) bool {
			return st.backfill.snapshotting(tableOf[topic]) || st.backfill.recovery.recovering(lsn)
		}}
	if c.cfg.Encoding.Encoding == "debezium" && c.cfg.SchemasEnable {
		w.key = pipeline.WatermarkKeyWithSchema
	}
	if st.txn != nil {
		// Exactly-once: the stream writes them inside its Kafka
		// transactions (stream_eos.go), covering what each commits.
		w.noWait = true
		st.wm = w
		return func() {}
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.run(wctx) }()
	return sync.OnceFunc(func() { cancel(); <-done })
}

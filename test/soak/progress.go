package soak

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/kafkaclient"
)

// sample is the pipeline's progress at one moment: capture's confirmed
// position, then the topic's end offsets and each sink group's committed
// offsets, read in that order. Everything capture confirmed was
// acknowledged by Kafka first, so it lies below ends.
type sample struct {
	at        time.Time
	confirmed pglogrepl.LSN
	ends      [partitions]int64
	committed map[string][partitions]int64 // by group; -1 when none
}

// prober reads samples. It keeps one connection to each system and
// drops it on any error: the systems it reads are the ones being killed.
type prober struct {
	sourceURL string
	brokers   []string
	conn      *pgx.Conn
	client    sarama.Client
	admin     sarama.ClusterAdmin
}

func (p *prober) close() {
	if p.conn != nil {
		_ = p.conn.Close(context.Background())
		p.conn = nil
	}
	if p.admin != nil {
		_ = p.admin.Close() // closes the client too
		p.admin, p.client = nil, nil
	}
}

func (p *prober) read(ctx context.Context) (sample, error) {
	s := sample{committed: map[string][partitions]int64{}}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if p.conn == nil {
		conn, err := pgx.Connect(ctx, p.sourceURL)
		if err != nil {
			return s, fmt.Errorf("connect to the order database: %w", err)
		}
		p.conn = conn
	}
	var lsn string
	err := p.conn.QueryRow(ctx, `SELECT coalesce(confirmed_flush_lsn::text, '0/0') FROM pg_replication_slots WHERE slot_name = 'cdcsync'`).Scan(&lsn)
	if err != nil {
		_ = p.conn.Close(context.Background())
		p.conn = nil
		return s, fmt.Errorf("read the slot: %w", err)
	}
	if s.confirmed, err = pglogrepl.ParseLSN(lsn); err != nil {
		return s, err
	}
	if p.admin == nil {
		client, err := sarama.NewClient(p.brokers, probeConfig())
		if err != nil {
			return s, fmt.Errorf("connect to the broker: %w", err)
		}
		admin, err := sarama.NewClusterAdminFromClient(client)
		if err != nil {
			client.Close()
			return s, fmt.Errorf("connect to the broker: %w", err)
		}
		p.client, p.admin = client, admin
	}
	if err := p.readKafka(&s); err != nil {
		p.close()
		return s, err
	}
	s.at = time.Now()
	return s, nil
}

func (p *prober) readKafka(s *sample) error {
	for part := range int32(partitions) {
		// The last stable offset: what capture confirmed is in committed
		// Kafka transactions below it, and the sinks commit up to it.
		end, err := kafkaclient.StableOffset(p.client, ordersTopic, part)
		if err != nil {
			return fmt.Errorf("end offset of %s/%d: %w", ordersTopic, part, err)
		}
		s.ends[part] = end
	}
	all := make([]int32, partitions)
	for i := range all {
		all[i] = int32(i)
	}
	for _, g := range groups() {
		resp, err := p.admin.ListConsumerGroupOffsets(g, map[string][]int32{ordersTopic: all})
		if err != nil {
			return fmt.Errorf("offsets of group %s: %w", g, err)
		}
		if resp.Err != sarama.ErrNoError {
			return fmt.Errorf("offsets of group %s: %w", g, resp.Err)
		}
		var c [partitions]int64
		for part := range int32(partitions) {
			c[part] = -1
			if b := resp.GetBlock(ordersTopic, part); b != nil && b.Err == sarama.ErrNoError {
				c[part] = b.Offset
			}
		}
		s.committed[g] = c
	}
	return nil
}

// walPosition returns the order database's current WAL insert position.
func walPosition(ctx context.Context, url string) (pglogrepl.LSN, error) {
	var lsn string
	if err := queryRow(ctx, url, `SELECT pg_current_wal_lsn()::text`, &lsn); err != nil {
		return 0, fmt.Errorf("read the WAL position: %w", err)
	}
	return pglogrepl.ParseLSN(lsn)
}

// watch is one "has the pipeline delivered everything up to here" question:
// it is answered when capture confirmed the WAL position taken at start
// (every change committed before it is on Kafka) and then both sink groups
// committed offsets at or past the topic's end offsets read at that moment
// (every such change is applied by both sinks; offsets are committed only
// after applying). The answer is an upper bound: the end offsets also
// cover changes committed after start.
type watch struct {
	name  string
	start time.Time
	wal   pglogrepl.LSN
	// set once capture caught up
	onKafka bool
	target  [partitions]int64
	done    chan struct{}
	took    time.Duration
}

// Done reports whether the watch was answered.
func (w *watch) Done() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

func (w *watch) observe(s sample) {
	if w.Done() || s.at.Before(w.start) {
		return
	}
	if !w.onKafka {
		if s.confirmed < w.wal {
			return
		}
		w.onKafka, w.target = true, s.ends
	}
	for _, g := range groups() {
		c := s.committed[g]
		for part := range partitions {
			if c[part] < w.target[part] {
				return
			}
		}
	}
	w.took = s.at.Sub(w.start)
	close(w.done)
}

// tracker samples progress in the background and answers watches.
type tracker struct {
	p       *prober
	mu      sync.Mutex
	watches []*watch
	last    sample
	errs    int
	lastErr error
}

// add starts a watch at the current WAL position; start is the moment the
// question is about (taken before reading the position).
func (t *tracker) add(ctx context.Context, name string, start time.Time) (*watch, error) {
	var lsn pglogrepl.LSN
	var err error
	for range 50 {
		if lsn, err = walPosition(ctx, t.p.sourceURL); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	w := &watch{name: name, start: start, wal: lsn, done: make(chan struct{})}
	t.mu.Lock()
	t.watches = append(t.watches, w)
	t.mu.Unlock()
	return w, nil
}

// run samples every interval until ctx ends.
func (t *tracker) run(ctx context.Context, interval time.Duration) {
	defer t.p.close()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		s, err := t.p.read(ctx)
		t.mu.Lock()
		if err != nil {
			t.errs++
			t.lastErr = err
		} else {
			t.last = s
			open := t.watches[:0]
			for _, w := range t.watches {
				w.observe(s)
				if !w.Done() {
					open = append(open, w)
				}
			}
			t.watches = open
		}
		t.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// wait blocks until w is answered or timeout passes.
func (t *tracker) wait(ctx context.Context, w *watch, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		t.mu.Lock()
		defer t.mu.Unlock()
		return fmt.Errorf("%s: pipeline not caught up after %v (WAL %s, capture on Kafka: %v; last sample: confirmed %s, ends %v, committed %v; last read error: %v)",
			w.name, timeout, w.wal, w.onKafka, t.last.confirmed, t.last.ends, t.last.committed, t.lastErr)
	}
}

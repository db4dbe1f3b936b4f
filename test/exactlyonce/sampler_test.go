package exactlyonce

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// sampler watches the table topics as a concurrent read_committed
// consumer would: each sample takes one consistent cut of every
// partition's last stable offset (cut), reads every partition up to it,
// and notes, per Postgres transaction (commit LSN), how many of its
// changes were visible. Partitions are read incrementally: what was below
// one cut stays as it was.
type sampler struct {
	r      *reader
	topics []string

	mu       sync.Mutex
	cursor   map[tp]int64
	seen     map[string]bool
	count    map[string]int         // per transaction, distinct changes visible
	observed map[string]map[int]int // per transaction: visible count -> first sample that saw it
	samples  int
	failed   int // samples that failed (the broker was down)
	lastErr  error
}

func newSampler(brokers, topics []string) *sampler {
	return &sampler{
		r: newReader(brokers, sarama.ReadCommitted), topics: topics,
		cursor: map[tp]int64{}, seen: map[string]bool{}, count: map[string]int{}, observed: map[string]map[int]int{},
	}
}

// sample takes one sample; on an error nothing of it counts.
func (s *sampler) sample() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ends, err := s.r.cut(s.topics)
	if err != nil {
		return err
	}
	var recs []rec
	next := map[tp]int64{}
	for x, end := range ends {
		from := s.cursor[x]
		if end <= from {
			continue
		}
		if err := s.r.readRange(x, from, end, func(m rec) { recs = append(recs, m) }); err != nil {
			return err
		}
		next[x] = end
	}
	for x, end := range next {
		s.cursor[x] = end
	}
	touched := map[string]bool{}
	for _, m := range recs {
		if id := m.identity(); !s.seen[id] {
			s.seen[id] = true
			k := commitKey(m.Pos)
			s.count[k]++
			touched[k] = true
		}
	}
	s.samples++
	for k := range touched {
		if s.observed[k] == nil {
			s.observed[k] = map[int]int{}
		}
		if _, ok := s.observed[k][s.count[k]]; !ok {
			s.observed[k][s.count[k]] = s.samples
		}
	}
	return nil
}

// run samples every interval until stop is called.
func (s *sampler) run(interval time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if err := s.sample(); err != nil {
				s.mu.Lock()
				s.failed++
				s.lastErr = err
				s.mu.Unlock()
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
			s.r.Close()
		})
	}
}

// partial returns, against the final size of every transaction (final,
// from a full read at the end), the transactions some sample saw only
// part of, and reports a few with t.Errorf.
func (s *sampler) partial(t *testing.T, final map[string]int) int {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	bad := 0
	for _, k := range sortedKeys(s.observed) {
		for n, sample := range s.observed[k] {
			if n != final[k] {
				bad++
				if bad <= 5 {
					t.Errorf("atomicity: sample %d saw %d of the %d changes of the transaction committed at %s", sample, n, final[k], k)
				}
				break
			}
		}
	}
	return bad
}

func (s *sampler) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := fmt.Sprintf("%d samples (%d failed while the broker was down", s.samples, s.failed)
	if s.lastErr != nil {
		msg += fmt.Sprintf("; last: %v", s.lastErr)
	}
	return msg + fmt.Sprintf("), %d transactions seen", len(s.observed))
}

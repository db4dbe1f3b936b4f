package exactlyonce

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
)

// delivery is CDCSYNC_DELIVERY for the capture processes of these tests:
// exactly-once, unless CDCSYNC_TEST_DELIVERY says otherwise (at-least-once
// runs the same tests against today's behaviour, where they must fail).
func delivery() string {
	if d := os.Getenv("CDCSYNC_TEST_DELIVERY"); d != "" {
		return d
	}
	return "exactly-once"
}

// soak reports whether the long forms run (`make exactly-once-soak`).
func soak() bool { return os.Getenv("CDCSYNC_EXACTLY_ONCE_SOAK") != "" }

// tables are what the writers change: one Postgres transaction touches
// both, so its records land on two topics and eight partitions (and an
// order's outbox event on a third topic).
var tables = []string{"orders", "lines"}

// The writers publish an outbox event (message mode, capture's default
// prefix) with every order they insert: aggregate "order", key the
// order's id, payload {"rev":<rev>}. The ledger counts the events as
// changes of the pseudo-table events.
const (
	eventsTable       = "events"
	eventsTopicSuffix = ".events.order"
)

const tableDDL = `(id bigint PRIMARY KEY, writer int NOT NULL, rev bigint NOT NULL, note text NOT NULL)`

// setup is one test's database, names and capture environment.
type setup struct {
	t       *testing.T
	pg      *testenv.Postgres
	kafka   *testenv.Kafka
	db      string
	conn    *pgx.Conn
	slot    string
	prefix  string
	env     []string // CDCSYNC_ variables of capture (and replay)
	bin     string
	topics  []string
	started int // capture processes started so far
}

// newSetup creates a database with the tables, on pg, capturing into
// kafka; extra is appended to capture's environment.
func newSetup(t *testing.T, pg *testenv.Postgres, kafka *testenv.Kafka, extra ...string) *setup {
	t.Helper()
	s := &setup{t: t, pg: pg, kafka: kafka, bin: testenv.BuildCdcsync(t)}
	s.db = pg.CreateDB(t)
	s.conn = s.connect()
	var qualified []string
	for _, table := range tables {
		s.exec("CREATE TABLE " + pgx.Identifier{table}.Sanitize() + " " + tableDDL)
		qualified = append(qualified, "public."+table)
	}
	s.slot = testenv.RandomName("slot")
	s.prefix = testenv.RandomName("eos")
	for _, table := range tables {
		s.topics = append(s.topics, pipeline.Topic(s.prefix, "public", table))
	}
	// The writers' outbox events: created now, so that readers can cut
	// it before the first event.
	s.topics = append(s.topics, s.prefix+eventsTopicSuffix)
	if err := kafka.CreateTopic(s.prefix+eventsTopicSuffix, 4); err != nil {
		t.Fatal(err)
	}
	s.env = append([]string{
		"CDCSYNC_SOURCE_URL=" + pg.URL(s.db),
		"CDCSYNC_TABLES=" + strings.Join(qualified, ","),
		"CDCSYNC_SLOT=" + s.slot,
		"CDCSYNC_PUBLICATION=" + testenv.RandomName("pub"),
		"CDCSYNC_SNAPSHOT=never",
		"CDCSYNC_TOPIC_PREFIX=" + s.prefix,
		"CDCSYNC_TOPIC_PARTITIONS=4",
		"CDCSYNC_KAFKA_BROKERS=" + strings.Join(kafka.Brokers(), ","),
		"CDCSYNC_HEARTBEAT_INTERVAL=500ms",
		"CDCSYNC_STATUS_INTERVAL=200ms",
		"CDCSYNC_HTTP_ADDR=",
		"CDCSYNC_LOG_LEVEL=info",
		"CDCSYNC_DELIVERY=" + delivery(),
	}, extra...)
	return s
}

func (s *setup) connect() *pgx.Conn {
	s.t.Helper()
	conn, err := pgx.Connect(context.Background(), s.pg.URL(s.db))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func (s *setup) exec(sql string, args ...any) {
	s.t.Helper()
	if _, err := s.conn.Exec(context.Background(), sql, args...); err != nil {
		s.t.Fatalf("%s: %v", sql, err)
	}
}

// capture starts a capture process.
func (s *setup) capture(extra ...string) *testenv.Process {
	s.t.Helper()
	s.started++
	return testenv.StartProcess(s.t, fmt.Sprintf("capture-%d", s.started), s.bin, append(s.env, extra...), "capture")
}

// slotState returns the slot's backend pid (0 when inactive) and its
// confirmed LSN.
func (s *setup) slotState() (pid int, confirmed pglogrepl.LSN) {
	var p *int
	var lsn *string
	_ = s.conn.QueryRow(context.Background(), `SELECT active_pid, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, s.slot).Scan(&p, &lsn)
	if p != nil {
		pid = *p
	}
	if lsn != nil {
		confirmed, _ = pglogrepl.ParseLSN(*lsn)
	}
	return pid, confirmed
}

// waitStreaming waits until a capture streams from the slot (other than
// the backend pid not).
func (s *setup) waitStreaming(not int) int {
	s.t.Helper()
	var pid int
	waitFor(s.t, 60*time.Second, "capture to stream from slot "+s.slot, func() bool {
		pid, _ = s.slotState()
		return pid != 0 && pid != not
	})
	return pid
}

// waitConfirmed waits until capture has confirmed the WAL written so far,
// which it does only once all of it is on Kafka (committed, in
// exactly-once mode).
func (s *setup) waitConfirmed(timeout time.Duration) {
	s.t.Helper()
	var end pglogrepl.LSN
	var text string
	if err := s.conn.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&text); err != nil {
		s.t.Fatal(err)
	}
	end, _ = pglogrepl.ParseLSN(text)
	waitFor(s.t, timeout, "capture to confirm the WAL up to "+end.String(), func() bool {
		_, c := s.slotState()
		return c >= end
	})
}

// stop ends a capture process with SIGTERM, which must be a clean exit.
func stop(t *testing.T, p *testenv.Process) {
	t.Helper()
	if p.Exited() {
		t.Fatalf("%s exited before the end:\n%s", p.Name, p.Tail(3000))
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(20 * time.Second); err != nil || code != 0 {
		t.Fatalf("%s after SIGTERM: exit %d, %v\n%s", p.Name, code, err, p.Tail(3000))
	}
}

// readCommitted reads every change record of the test's topics that a
// read_committed consumer can read now.
func (s *setup) readCommitted() []rec {
	s.t.Helper()
	return s.read(sarama.ReadCommitted)
}

func (s *setup) read(iso sarama.IsolationLevel) []rec {
	s.t.Helper()
	r := newReader(s.kafka.Brokers(), iso)
	defer r.Close()
	recs, _, err := r.readAll(s.topics)
	if err != nil {
		s.t.Fatal(err)
	}
	return recs
}

// ownKafka starts a broker for one test (tests that restart or hold it).
func ownKafka(t *testing.T) *testenv.Kafka {
	t.Helper()
	k, err := testenv.StartKafka()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}

// waitFor polls cond until it is true or the timeout expires.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, timeout, what, cond)
}

// topicEnd is the sum of the high watermarks (read_uncommitted) or last
// stable offsets (read_committed) of topics, 0 when they do not exist
// yet.
func (s *setup) topicEnd(iso sarama.IsolationLevel) int64 {
	r := newReader(s.kafka.Brokers(), iso)
	defer r.Close()
	ends, err := r.cut(s.topics)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range ends {
		n += e
	}
	return n
}

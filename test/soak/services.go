package soak

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/testenv"
)

// Names of the soak's databases, topics and consumer groups. Each Postgres
// cluster is the soak's own, so the names need not be random.
const (
	orderDB     = "orders"
	inventoryDB = "inventory"
	ordersTopic = "cdc.public.orders"
	dlqTopic    = ordersTopic + ".dlq" // the sinks' dead letters (CDCSYNC_DLQ_SUFFIX default)
	partitions  = 4
)

// groups are the sinks' consumer groups (CDCSYNC_GROUP_PREFIX default).
func groups() []string { return []string{"cdcsync-inventory", "cdcsync-redis"} }

// ordersDDL is the order service's table. rev counts the row's changes:
// the writers set it, so every committed state of a row can be found on
// Kafka by (id, rev). Ids are chosen by the writers, so that a write whose
// commit outcome is unknown can be looked up.
const ordersDDL = `CREATE TABLE public.orders (
	id       bigint PRIMARY KEY,
	item_id  bigint NOT NULL,
	quantity bigint NOT NULL CHECK (quantity > 0),
	status   text NOT NULL,
	rev      bigint NOT NULL)`

// inventoryDDL is DESIGN.md's inventory_items; the soak creates it to
// stock the items (on_hand belongs to the warehouse, not the sink).
const inventoryDDL = `CREATE TABLE inventory_items (
	item_id  bigint PRIMARY KEY,
	on_hand  bigint NOT NULL DEFAULT 0,
	reserved bigint NOT NULL DEFAULT 0,
	shipped  bigint NOT NULL DEFAULT 0)`

// rig is the running pipeline: every component is a separate OS process
// the soak can kill, stop, pause and start again. Only the goroutine that
// runs the schedule touches the processes.
type rig struct {
	t          testing.TB
	bin        string
	orderPG    *testenv.Postgres
	invPG      *testenv.Postgres
	redis      *testenv.Redis
	brokerAddr string
	brokerDir  string
	broker     *testenv.Process
	capture    *testenv.Process
	captureAt  string // capture's HTTP address
	sinks      [sinkInstances]*testenv.Process
	sinkAt     [sinkInstances]string // the sinks' HTTP addresses
	// absorbed sums the sinks' stale-skip counters of processes that
	// ended (scraped just before they were stopped), by sink.
	absorbed map[string]float64
	// unexpected lists daemons that exited without being told to.
	unexpected []string
	// started lists every daemon process in start order, for keepLogs.
	started []*testenv.Process
	// delivery is capture's CDCSYNC_DELIVERY (its default when empty).
	delivery string
}

// startRig starts every service and daemon and waits until capture holds
// its slot and both sinks joined their groups.
func startRig(ctx context.Context, t testing.TB, items int, delivery string) *rig {
	t.Helper()
	r := &rig{t: t, absorbed: map[string]float64{}, delivery: delivery}
	// Registered first, so that the services go whatever fails below.
	t.Cleanup(func() {
		for _, pg := range []*testenv.Postgres{r.orderPG, r.invPG} {
			if pg != nil {
				pg.Close()
			}
		}
		if r.redis != nil {
			r.redis.Close()
		}
	})
	var wg sync.WaitGroup
	var pgErr, invErr, redisErr error
	wg.Go(func() { r.orderPG, pgErr = testenv.StartPostgres() })
	wg.Go(func() { r.invPG, invErr = testenv.StartPostgres() })
	wg.Go(func() { r.redis, redisErr = testenv.StartRedis() })
	// Build meanwhile, on the test goroutine: a failed build calls t.Fatal.
	func() {
		defer wg.Wait()
		r.bin = testenv.BuildCdcsync(t)
	}()
	if err := errors.Join(pgErr, invErr, redisErr); err != nil {
		t.Fatal(err)
	}
	if err := r.createSchema(ctx, items); err != nil {
		t.Fatal(err)
	}
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r.brokerAddr, r.brokerDir = "127.0.0.1:"+strconv.Itoa(port), t.TempDir()
	r.captureAt = freeAddr(t)
	for i := range r.sinkAt {
		r.sinkAt[i] = freeAddr(t)
	}
	r.startBroker()
	r.startCapture()
	if err := r.waitSlotActive(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	for i := range r.sinks {
		r.startSink(i)
	}
	if err := r.waitGroupsStable(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	return r
}

func freeAddr(t testing.TB) string {
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}

// createSchema creates the order database with its table and the inventory
// store with items 1..items stocked (1000 to 5000 on hand).
func (r *rig) createSchema(ctx context.Context, items int) error {
	if err := r.orderPG.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{orderDB}.Sanitize()); err != nil {
		return err
	}
	if err := r.orderPG.Exec(ctx, orderDB, ordersDDL); err != nil {
		return err
	}
	if err := r.invPG.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{inventoryDB}.Sanitize()); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, r.invPG.URL(inventoryDB))
	if err != nil {
		return fmt.Errorf("connect to the inventory store: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, inventoryDDL); err != nil {
		return fmt.Errorf("create inventory_items: %w", err)
	}
	_, err = conn.Exec(ctx, `INSERT INTO inventory_items (item_id, on_hand)
		SELECT i, 1000 + (i * 7919) % 4001 FROM generate_series(1, $1::bigint) AS i`, items)
	if err != nil {
		return fmt.Errorf("stock the items: %w", err)
	}
	return nil
}

func (r *rig) orderURL() string { return r.orderPG.URL(orderDB) }

// startBroker starts the development broker on its fixed address and data
// dir, creating the topics (kfake persists only explicitly created
// topics), and waits until it serves them.
func (r *rig) startBroker() {
	r.t.Helper()
	r.broker = r.track(testenv.StartProcess(r.t, "dev-broker", r.bin, []string{
		"CDCSYNC_DEV_BROKER_ADDR=" + r.brokerAddr,
		"CDCSYNC_DEV_BROKER_DATA_DIR=" + r.brokerDir,
		"CDCSYNC_DEV_BROKER_TOPICS=" + ordersTopic + ":" + strconv.Itoa(partitions) + "," + dlqTopic + ":1",
	}, "dev-broker"))
	if err := waitTopics(r.brokerAddr, 30*time.Second, ordersTopic, dlqTopic); err != nil {
		r.t.Fatalf("%v\n%s", err, r.broker.Tail(2000))
	}
}

// waitTopics waits until the broker on addr answers metadata with every
// one of topics.
func waitTopics(addr string, timeout time.Duration, topics ...string) error {
	deadline := time.Now().Add(timeout)
	for {
		client, err := sarama.NewClient([]string{addr}, probeConfig())
		if err == nil {
			var have []string
			have, err = client.Topics()
			client.Close()
			if err == nil {
				missing := 0
				for _, t := range topics {
					if !contains(have, t) {
						missing++
					}
				}
				if missing == 0 {
					return nil
				}
				err = fmt.Errorf("%d of %d topics missing", missing, len(topics))
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("development broker on %s not ready within %v: %w", addr, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (r *rig) startCapture() {
	r.t.Helper()
	r.capture = r.track(testenv.StartProcess(r.t, "capture", r.bin, []string{
		"CDCSYNC_SOURCE_URL=" + r.orderURL(),
		"CDCSYNC_KAFKA_BROKERS=" + r.brokerAddr,
		"CDCSYNC_HTTP_ADDR=" + r.captureAt,
		// Confirms follow heartbeats too; a short interval lets the
		// slot's position pass the WAL that is not ours (checkpoints).
		"CDCSYNC_HEARTBEAT_INTERVAL=1s",
		"CDCSYNC_DELIVERY=" + r.delivery,
	}, "capture"))
}

func (r *rig) startSink(i int) {
	r.t.Helper()
	r.sinks[i] = r.track(testenv.StartProcess(r.t, fmt.Sprintf("sink-%c", 'a'+i), r.bin, []string{
		"CDCSYNC_SINKS=inventory,redis",
		"CDCSYNC_INVENTORY_URL=" + r.invPG.URL(inventoryDB),
		"CDCSYNC_REDIS_URL=" + r.redis.URL(),
		"CDCSYNC_KAFKA_BROKERS=" + r.brokerAddr,
		"CDCSYNC_HTTP_ADDR=" + r.sinkAt[i],
	}, "sink"))
}

// waitSlotActive waits until capture streams from its slot.
func (r *rig) waitSlotActive(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var active bool
		err := queryRow(ctx, r.orderURL(), `SELECT coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = 'cdcsync'`, &active)
		if err == nil && active {
			return nil
		}
		if r.capture.Exited() {
			return fmt.Errorf("capture exited at start-up:\n%s", r.capture.Tail(3000))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("capture did not take its slot within %v (%v):\n%s", timeout, err, r.capture.Tail(3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitGroupsStable waits until both consumer groups are stable with every
// sink process as a member, so the writers start against a settled group.
func (r *rig) waitGroupsStable(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for ctx.Err() == nil {
		ok, state, err := groupsStable(r.brokerAddr, sinkInstances)
		if err == nil && ok {
			return nil
		}
		last = state
		if err != nil {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("consumer groups not stable within %v: %s", timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return ctx.Err()
}

func groupsStable(addr string, members int) (bool, string, error) {
	admin, err := sarama.NewClusterAdmin([]string{addr}, probeConfig())
	if err != nil {
		return false, "", err
	}
	defer admin.Close()
	descs, err := admin.DescribeConsumerGroups(groups())
	if err != nil {
		return false, "", err
	}
	state := ""
	ok := len(descs) == len(groups())
	for _, d := range descs {
		state += fmt.Sprintf("%s: %s with %d members; ", d.GroupId, d.State, len(d.Members))
		if d.State != "Stable" || len(d.Members) != members {
			ok = false
		}
	}
	return ok, state, nil
}

// queryRow runs one query on a fresh connection.
func queryRow(ctx context.Context, url, sql string, dest ...any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql).Scan(dest...)
}

// probeConfig is a sarama configuration that fails fast, for the soak's
// own reads while components come and go.
func probeConfig() *sarama.Config {
	cfg := testenv.SaramaConfig()
	cfg.ClientID = "cdcsync-soak"
	cfg.Net.DialTimeout = 2 * time.Second
	cfg.Net.ReadTimeout = 5 * time.Second
	cfg.Net.WriteTimeout = 5 * time.Second
	cfg.Metadata.Retry.Max = 1
	cfg.Metadata.Retry.Backoff = 100 * time.Millisecond
	cfg.Admin.Timeout = 5 * time.Second
	return cfg
}

// stopped is how a daemon ended when the soak stopped it.
const stopTimeout = 20 * time.Second

// stopDaemon ends p by action: SIGKILL, or SIGTERM and a wait for a clean
// exit (status 0), which is documented behaviour; anything else is an
// error for the caller to report.
func stopDaemon(p *testenv.Process, a Action) error {
	if a == ActionKill {
		return p.Kill()
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM %s: %w", p.Name, err)
	}
	code, err := p.Wait(stopTimeout)
	if err != nil {
		_ = p.Kill()
		return fmt.Errorf("%s did not stop within %v of SIGTERM", p.Name, stopTimeout)
	}
	if code != 0 {
		return fmt.Errorf("%s exited with status %d after SIGTERM (want 0):\n%s", p.Name, code, p.Tail(1500))
	}
	return nil
}

// checkAlive reports daemons that exited without being told to (the
// daemons retry every outage, so they never should) and starts them again
// so the soak goes on.
func (r *rig) checkAlive() []string {
	var found []string
	if r.broker.Exited() {
		found = append(found, "dev-broker exited by itself:\n"+r.broker.Tail(1500))
		r.startBroker()
	}
	if r.capture.Exited() {
		found = append(found, "capture exited by itself:\n"+r.capture.Tail(1500))
		r.startCapture()
	}
	for i, s := range r.sinks {
		if s.Exited() {
			found = append(found, fmt.Sprintf("sink-%c exited by itself:\n%s", 'a'+i, s.Tail(1500)))
			r.startSink(i)
		}
	}
	r.unexpected = append(r.unexpected, found...)
	return found
}

func (r *rig) track(p *testenv.Process) *testenv.Process {
	r.started = append(r.started, p)
	return p
}

// keepLogs copies every daemon's and server's log into dir (when set),
// named in start order, before the test's clean-up removes them.
func (r *rig) keepLogs(dir string) {
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.t.Logf("keep logs: %v", err)
		return
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			r.t.Logf("keep logs: %v", err)
		}
	}
	for i, p := range r.started {
		write(fmt.Sprintf("%03d-%s.log", i, p.Name), []byte(p.Output()))
	}
	for name, path := range map[string]string{
		"order-db.log":     filepath.Join(r.orderPG.Dir, "postgres.log"),
		"inventory-db.log": filepath.Join(r.invPG.Dir, "postgres.log"),
		"redis.log":        filepath.Join(r.redis.Dir, "redis.log"),
	} {
		if b, err := os.ReadFile(path); err == nil {
			write(name, b)
		}
	}
	r.t.Logf("logs kept in %s", dir)
}

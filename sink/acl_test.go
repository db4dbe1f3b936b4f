package sink

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/config"
)

// readmeACL returns the Redis ACL line the README documents for the sinks,
// as arguments of the ACL command, with the password placeholder replaced.
func readmeACL(t *testing.T, password string) []any {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "ACL SETUSER cdcsync ") {
			continue
		}
		var args []any
		for _, f := range strings.Fields(line) {
			if f == ">…" {
				f = ">" + password
			}
			args = append(args, f)
		}
		return args
	}
	t.Fatal("README.md has no line starting with `ACL SETUSER cdcsync `")
	return nil
}

// TestReadmeRedisACL creates the Redis user exactly as the README's ACL
// line says and runs both sinks as that user through a workload with
// truncates and unchanged TOASTed columns: both stores must end exact and
// nothing may be dead-lettered. The documented ACL used to lack HMGET (the
// Redis sink dead-lettered updates with unchanged TOAST), HGET and the
// cdcsync:available:version key (the inventory sink retried forever).
func TestReadmeRedisACL(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 500, onHand: 500})
	ctx := context.Background()
	if err := h.rdb.Do(ctx, readmeACL(t, "acl-test-pw")...).Err(); err != nil {
		t.Fatalf("the README's ACL line: %v", err)
	}
	w := newWorkload(seed(t), 500)
	w.truncates = true
	cfg := h.config(config.SinkInventory, config.SinkRedis)
	cfg.RedisURL = "redis://cdcsync:acl-test-pw@" + h.rd.Addr() + "/0"
	cfg.BatchSize = 300
	s := h.start(cfg)

	h.produce(w.generate(300, 1500))
	h.waitApplied(60*time.Second, h.groups(config.SinkInventory, config.SinkRedis)...)
	h.checkInventory(w)
	h.checkRedis(w, true, true)
	if dead := counter(t, s.reg, "cdcsync_sink_events_dead_lettered_total", nil); dead != 0 {
		t.Errorf("%v messages dead-lettered as the README's ACL user", dead)
	}
}

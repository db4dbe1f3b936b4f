package sink

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestRedisStoreErrorsStall breaks Redis in ways that concern the store,
// not the messages: a key of the wrong type where a version belongs
// (WRONGTYPE), a user that lost the right to write hashes mid-stream
// (NOPERM, on the script's write of an update whose row exists), and a
// restart with requirepass the sink has no password for (NOAUTH). Each
// time the redis sink must stall and retry, dead-letter nothing, keep the
// row it could not update intact (the script used to delete it before the
// failing write), and apply everything once the operator repaired Redis.
func TestRedisStoreErrorsStall(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	admin := h.rdb // the default user, as the sink
	cfg := h.config(config.SinkRedis)
	cfg.RetryMax = 300 * time.Millisecond
	s := h.start(cfg)
	group := h.groups(config.SinkRedis)

	h.produce([]record{orderRecord(pipeline.OpCreate, at(10, 5), 1, 7, 2, "created")})
	h.waitApplied(30*time.Second, group...)

	// stalls waits until the sink retried a few more times, then checks
	// that it dead-lettered nothing and committed nothing past the stall.
	stalls := func(what string) {
		t.Helper()
		before := counter(t, s.reg, "cdcsync_sink_retries_total", map[string]string{"sink": config.SinkRedis})
		deadline := time.Now().Add(30 * time.Second)
		for counter(t, s.reg, "cdcsync_sink_retries_total", map[string]string{"sink": config.SinkRedis}) < before+3 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the redis sink did not retry", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if n := counter(t, s.reg, "cdcsync_sink_events_dead_lettered_total", nil); n != 0 {
			t.Fatalf("%s: %v messages dead-lettered; a store condition is no message's fault", what, n)
		}
		t.Logf("%s: the sink stalls and retries", what)
	}

	// WRONGTYPE: a stray hash where order 2's version belongs.
	if err := admin.HSet(ctx, "cdcver:public.orders:2", "not", "a version").Err(); err != nil {
		t.Fatal(err)
	}
	h.produce([]record{orderRecord(pipeline.OpCreate, at(20, 15), 2, 7, 1, "created")})
	stalls("WRONGTYPE")
	if err := admin.Del(ctx, "cdcver:public.orders:2").Err(); err != nil {
		t.Fatal(err)
	}
	h.waitApplied(30*time.Second, group...)

	// NOPERM on the write of an update of order 1, which exists.
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "-hset").Err(); err != nil {
		t.Fatal(err)
	}
	h.produce([]record{orderRecord(pipeline.OpUpdate, at(30, 25), 1, 7, 5, "paid")})
	stalls("NOPERM")
	if row := admin.HGetAll(ctx, "cdc:public.orders:1").Val(); row["status"] != "created" {
		t.Fatalf("order 1 while its update cannot be written: %v, want the row as it was", row)
	}
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "+hset").Err(); err != nil {
		t.Fatal(err)
	}
	h.waitApplied(30*time.Second, group...)

	// NOAUTH: Redis comes back requiring a password the sink does not
	// have, until the operator removes it again.
	h.rd.Password = "new-pw"
	if err := h.rd.Restart(false); err != nil {
		t.Fatal(err)
	}
	authed := redis.NewClient(&redis.Options{Addr: h.rd.Addr(), Password: "new-pw"})
	defer authed.Close()
	h.produce([]record{orderRecord(pipeline.OpCreate, at(40, 35), 3, 7, 1, "created")})
	stalls("NOAUTH")
	if err := authed.ConfigSet(ctx, "requirepass", "").Err(); err != nil {
		t.Fatal(err)
	}
	h.rd.Password = ""
	h.waitApplied(30*time.Second, group...)

	rows := h.rowCache()
	want := map[string]string{"cdc:public.orders:1": "paid", "cdc:public.orders:2": "created", "cdc:public.orders:3": "created"}
	for k, st := range want {
		if rows[k]["status"] != st {
			t.Errorf("%s = %v, want status %s", k, rows[k], st)
		}
	}
	if len(rows) != len(want) {
		t.Errorf("row cache holds %d rows, want %d: %v", len(rows), len(want), rows)
	}
}

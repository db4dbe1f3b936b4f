package verify

import (
	"strings"
	"testing"

	"github.com/cdcsync/cdcsync/internal/pipelinetest"
)

// The real pipeline (capture and both sinks, in-process) leaves no drift,
// whatever the column types: verify renders values exactly as they reach
// the row cache. A change verify must notice is then noticed.
func TestPipelineLeavesNoDrift(t *testing.T) {
	s := newStores(t)
	s.cfg.Tables = []string{"public.orders", "public.typed"}
	s.exec(s.src,
		`CREATE TABLE orders (id bigserial PRIMARY KEY, item_id bigint, quantity int, status text, created_at timestamptz DEFAULT now())`,
		`CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`,
		`CREATE TABLE typed (a int, b text, i2 smallint, f4 real, f8 double precision, n numeric, flag bool,
			ts timestamp, tstz timestamptz, d date, tm time, iv interval, u uuid, j json, jb jsonb, by bytea,
			arr int[], tarr text[], m mood, big text, g int GENERATED ALWAYS AS (a * 2) STORED, PRIMARY KEY (a, b))`,
		`INSERT INTO orders (item_id, quantity, status) SELECT 1 + g % 7, 1 + g % 3, 'created' FROM generate_series(1, 200) g`,
		`INSERT INTO typed VALUES
			(1, 'x:y', 3, 1.5, 0.1, 12345678901234567890.123, true, '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15+02',
			 '2024-02-29', '13:14:15', '1 day 2 hours', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"k": [1, 2]}', '{"k": "v"}',
			 '\xdeadbeef', '{1,NULL,3}', '{"a b","c,d"}', 'happy', repeat('toast', 5000)),
			(2, 'ünïcødé "q"', NULL, 'NaN', '-Infinity', NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, 'null', '[]',
			 '', '{}', NULL, NULL, NULL)`)
	pipelineStart(t, s)
	// Changes while the pipeline runs: status moves, quantity and item
	// changes, deletes, an update that leaves the TOASTed value unchanged.
	s.exec(s.src,
		`UPDATE orders SET status = 'paid' WHERE id % 3 = 0`,
		`UPDATE orders SET status = 'shipped' WHERE id % 5 = 0`,
		`UPDATE orders SET status = 'cancelled' WHERE id % 11 = 0`,
		`UPDATE orders SET quantity = quantity + 2 WHERE id % 7 = 0`,
		`UPDATE orders SET item_id = 9 WHERE id % 13 = 0`,
		`DELETE FROM orders WHERE id % 17 = 0`,
		`INSERT INTO orders (item_id, quantity, status) VALUES (8, 4, 'paid')`,
		`UPDATE typed SET i2 = 4 WHERE a = 1`,
		`DELETE FROM typed WHERE a = 2`,
		`INSERT INTO typed (a, b, f8) VALUES (3, 'new', 2.5)`)
	pipelineWait(t, s)

	r := s.verify()
	if r.Drifted != 0 {
		t.Fatalf("drift after the pipeline caught up: %+v", r)
	}
	for _, c := range r.Checks {
		if c.Compared == 0 {
			t.Errorf("%s compared nothing", c.Label())
		}
		t.Logf("%s: %d compared", c.Label(), c.Compared)
	}

	// A change the sinks never saw (written to the stores directly) is
	// drift.
	s.exec(s.inv, `UPDATE inventory_items SET shipped = shipped + 1 WHERE item_id = 3`)
	s.redis("HSET", "cdc:public.typed:1:x:y", "m", "sad")
	r = s.verify()
	var lines []string
	for _, c := range r.Checks {
		for _, d := range c.Drifts {
			lines = append(lines, d.Describe(c.Name))
		}
	}
	got := strings.Join(lines, "\n")
	for _, want := range []string{"item 3: differs: shipped", "inventory:available:3: differs",
		`cdc:public.typed:1:x:y: differs: m expected "happy", actual "sad"`} {
		if !strings.Contains(got, want) {
			t.Errorf("drift lacks %q:\n%s", want, got)
		}
	}
	if r.Drifted != 3 {
		t.Errorf("drifted %d, want 3:\n%s", r.Drifted, got)
	}
}

// pipelineStart runs capture and both sinks in-process for s until the
// test ends (internal/pipelinetest), and points s.cfg at their slot,
// topics and groups.
func pipelineStart(t *testing.T, s *stores) {
	t.Helper()
	p := pipelinetest.NewFor(t, s.e, s.cfg)
	s.cfg = p.Verify
	p.Start()
}

// pipelineWait waits until every change so far is applied by both sinks.
func pipelineWait(t *testing.T, s *stores) {
	t.Helper()
	pipelinetest.WaitCaughtUp(t, s.cfg)
}

package verify

import (
	"strings"
	"testing"
)

// TestProjectionAndVersionKeysAreVerified runs the real pipeline, then
// tampers with what verify did not use to look at: the inventory sink's
// order projection (a changed quantity, a missing row, a row for no order,
// a live order marked deleted) and the Redis version keys (a row's version
// missing, one that is not a position, an availability version ahead of
// the inventory store's). Each must be reported; before, none was.
func TestProjectionAndVersionKeysAreVerified(t *testing.T) {
	s := newStores(t)
	s.exec(s.src,
		`CREATE TABLE orders (id bigserial PRIMARY KEY, item_id bigint, quantity int, status text)`,
		`INSERT INTO orders (item_id, quantity, status) SELECT 1 + g % 7, 1 + g % 3, 'created' FROM generate_series(1, 50) g`)
	pipelineStart(t, s)
	s.exec(s.src,
		`UPDATE orders SET status = 'paid' WHERE id % 3 = 0`,
		`DELETE FROM orders WHERE id % 10 = 0`,
		`INSERT INTO orders (item_id, quantity, status) VALUES (3, 2, 'shipped')`)
	pipelineWait(t, s)

	r := s.verify()
	if r.Drifted != 0 {
		t.Fatalf("drift after the pipeline caught up: %+v", r)
	}
	compared := map[string]int64{}
	for _, c := range r.Checks {
		compared[c.Name] = c.Compared
	}
	if compared["order_projection"] < 45 || compared["availability_versions"] < 7 || compared["row_cache"] < 45 {
		t.Fatalf("compared too little: %v", compared)
	}

	s.exec(s.inv,
		`UPDATE cdcsync_order_projection SET quantity = quantity + 1 WHERE order_id = '5'`,
		`DELETE FROM cdcsync_order_projection WHERE order_id = '6'`,
		`UPDATE cdcsync_order_projection SET deleted = true WHERE order_id = '7'`,
		`INSERT INTO cdcsync_order_projection (order_id, item_id, quantity, status, deleted, commit_lsn, change_lsn)
			VALUES ('99999', 1, 1, 'created', false, 1, 1)`)
	s.redis("DEL", "cdcver:public.orders:8")
	s.redis("SET", "cdcver:public.orders:9", "not a position")
	s.redis("HSET", "cdcsync:available:version", "3", "999999999999999999")
	r = s.verify()
	var lines []string
	for _, c := range r.Checks {
		for _, d := range c.Drifts {
			lines = append(lines, c.Name+" "+d.Describe(c.Name))
		}
	}
	got := strings.Join(lines, "\n")
	for _, want := range []string{
		`order_projection 5: differs: quantity expected`,
		`order_projection 6: missing`,
		`order_projection 7: differs: deleted expected "false", actual "true"`,
		`order_projection 99999: unexpected`,
		`row_cache cdc:public.orders:8: differs: (version) expected "the position of the row's last event", actual (absent)`,
		`row_cache cdc:public.orders:9: differs: (version) expected "a position", actual "not a position"`,
		`availability_versions inventory:available:3: differs: (version) expected "at most`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("drift lacks %q:\n%s", want, got)
		}
	}
	if r.Drifted != 7 {
		t.Errorf("%d drifts, want 7:\n%s", r.Drifted, got)
	}
}

package soak

import "testing"

// The writers' plans follow the order life cycle and number revisions
// without gaps; checked against the writer's own model, without a
// database.
func TestWriterPlansFollowTheLifeCycle(t *testing.T) {
	w := newWriter(1, 4, "", 200, 100, 7)
	next := map[string]map[string]bool{
		opPay:    {"created": true},
		opShip:   {"paid": true},
		opCancel: {"created": true, "paid": true},
		opChange: {"created": true, "paid": true},
	}
	for range 5000 {
		steps := w.plan()
		for _, s := range steps {
			if s.id%4 != 1 {
				t.Fatalf("writer 1 of 4 planned order %d", s.id)
			}
			switch {
			case s.before == nil:
				if s.op != opCreate || s.after.Rev != 1 || s.after.Status != "created" {
					t.Fatalf("bad create %+v %+v", s, s.after)
				}
			case s.after == nil:
				if s.op != opDelete {
					t.Fatalf("bad delete %+v", s)
				}
			default:
				if !next[s.op][s.before.Status] || s.after.Rev != s.before.Rev+1 {
					t.Fatalf("%s from %+v to %+v", s.op, s.before, s.after)
				}
				if s.after.Item < 1 || s.after.Item > 200 || s.after.Qty < 1 || s.after.Qty > 5 {
					t.Fatalf("%s out of range: %+v", s.op, s.after)
				}
				if s.op == opChange && s.after.Item == s.before.Item && s.after.Qty == s.before.Qty {
					t.Fatalf("change changed nothing: %+v", s.after)
				}
			}
		}
		w.commit(steps)
	}
	for _, op := range []string{opCreate, opPay, opShip, opCancel, opChange, opDelete} {
		if w.stats.Ops[op] == 0 {
			t.Errorf("no %s in 5000 transactions: %v", op, w.stats.Ops)
		}
	}
	if len(w.live) != len(w.liveIDs) {
		t.Errorf("%d live orders but %d live ids", len(w.live), len(w.liveIDs))
	}
}

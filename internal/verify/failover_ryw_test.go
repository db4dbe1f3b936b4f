package verify

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcsync/cdcsync/consistency"
)

// TestFailoverReadYourWritesWaitsForNewEpoch: the order database fails over
// to a standby that stopped replaying long before, so the new primary
// writes at LSNs far below those the stores have applied from the old one.
// A writer's token for a transaction on the new primary (an order created,
// another deleted) is not answered by any store (Redis row cache,
// availability cache, inventory store) while the change cannot be there
// (capture is stopped), and verify does not compare
// at a cut the stores have not reached; once capture recreated the slot
// in a new source epoch, re-read the table and swept what it did not
// re-emit, every wait returns, each only with the change visible, and
// verify finds no drift.
func TestFailoverReadYourWritesWaitsForNewEpoch(t *testing.T) {
	s := newStores(t)
	ctx := context.Background()
	primary, standby, db, p := failoverPipeline(t, s, 200)
	waitStandby(t, standby.URL(db), p.Capture.Slot)

	// The standby stops here; the old primary moves on by 64 MB of WAL,
	// which the stores apply.
	if err := standby.Stop(); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if err := primary.Exec(ctx, db, `UPDATE orders SET quantity = quantity + 1 WHERE id = 1`, `SELECT pg_switch_wal()`); err != nil {
			t.Fatal(err)
		}
	}
	p.WaitCaughtUp()
	p.StopCapture()
	applied := appliedLSN(t, s, "redis")

	// Fail over with the standby behind: kill the primary, promote the
	// standby and move it onto the primary's port.
	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := standby.Start(); err != nil {
		t.Fatal(err)
	}
	if err := standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := standby.Stop(); err != nil {
		t.Fatal(err)
	}
	standby.Port = primary.Port
	if err := standby.Start(); err != nil {
		t.Fatal(err)
	}

	// A writer on the new primary: an order for an item no other order has,
	// and order 5 (item 6, one of its ten orders) deleted in the same
	// transaction, which only the resnapshot-done record's sweep removes.
	conn, err := pgx.Connect(ctx, primary.URL(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `BEGIN; INSERT INTO orders VALUES (1000001, 999, 5, 'created'); DELETE FROM orders WHERE id = 5; COMMIT`); err != nil {
		t.Fatal(err)
	}
	tok, err := consistency.TakeToken(ctx, conn, consistency.WithSlot(p.Capture.Slot))
	if err != nil {
		t.Fatal(err)
	}
	if lsn := tokenLSN(t, tok); lsn >= applied {
		t.Fatalf("precondition: the new primary's token %s is not below the stores' applied position %s", tok, applied)
	}
	t.Logf("token on the new primary %s; the stores applied %s of the old primary", tok, applied)

	inv, err := pgxpool.New(ctx, s.cfg.InventoryURL)
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	waits := []struct {
		store   string
		wait    func(time.Duration) error
		visible func() bool
	}{
		{"row cache", func(d time.Duration) error { return consistency.WaitRedis(ctx, s.rdb, consistency.SinkRedis, tok, d) },
			func() bool {
				return s.rdb.Exists(ctx, "cdc:public.orders:1000001").Val() == 1 && s.rdb.Exists(ctx, "cdc:public.orders:5").Val() == 0
			}},
		{"availability cache", func(d time.Duration) error {
			return consistency.WaitRedis(ctx, s.rdb, consistency.SinkInventory, tok, d)
		},
			func() bool {
				return s.rdb.Get(ctx, "inventory:available:999").Val() == "-5" && s.rdb.Get(ctx, "inventory:available:6").Val() == "-9"
			}},
		{"inventory store", func(d time.Duration) error { return consistency.WaitInventory(ctx, inv, tok, d) },
			func() bool {
				var reserved, other int64
				_ = inv.QueryRow(ctx, `SELECT (SELECT reserved FROM inventory_items WHERE item_id = 999),
					(SELECT reserved FROM inventory_items WHERE item_id = 6)`).Scan(&reserved, &other)
				return reserved == 5 && other == 9
			}},
	}
	// Capture is stopped: the order cannot be in any store.
	for _, w := range waits {
		err := w.wait(300 * time.Millisecond)
		if !errors.Is(err, consistency.ErrTimeout) {
			t.Errorf("%s: wait for the new primary's token returned %v before the order was there (visible: %v)", w.store, err, w.visible())
		}
	}
	s.cfg.CutWait = time.Second
	if r, err := runVerify(ctx, s); err == nil {
		t.Errorf("verify compared at cut %s, which the stores have not applied: %d drifted", r.Cut, r.Drifted)
	} else if !errors.Is(err, consistency.ErrTimeout) {
		t.Errorf("verify before the stores reached the cut: %v, want a timeout", err)
	}

	p.StartCapture()
	for _, w := range waits {
		if err := w.wait(90 * time.Second); err != nil {
			t.Fatalf("%s: %v", w.store, err)
		}
		if !w.visible() {
			t.Errorf("%s: the wait returned, but the order is not visible", w.store)
		}
	}
	p.WaitCaughtUp()
	s.cfg.CutWait = 30 * time.Second
	r, err := runVerify(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if r.Drifted != 0 || r.Cut == "" {
		t.Fatalf("after recovery: drifted %d at cut %q", r.Drifted, r.Cut)
	}
}

// appliedLSN is the LSN of sink's applied-through position in Redis.
func appliedLSN(t *testing.T, s *stores, sink string) pglogrepl.LSN {
	t.Helper()
	v, err := s.rdb.Get(context.Background(), "cdcsync:applied:"+sink).Result()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := consistency.ParseToken(v)
	if err != nil {
		t.Fatal(err)
	}
	return tokenLSN(t, tok)
}

// tokenLSN is the LSN of a token, whatever its epoch.
func tokenLSN(t *testing.T, tok fmt.Stringer) pglogrepl.LSN {
	t.Helper()
	s := tok.String()
	if _, rest, ok := strings.Cut(s, "@"); ok {
		s = rest
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// runVerify runs verify with s.cfg and returns its error instead of
// failing.
func runVerify(ctx context.Context, s *stores) (*Report, error) {
	v, err := New(ctx, s.cfg)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	return v.Run(ctx)
}

package soak

import "testing"

func TestCheckLedger(t *testing.T) {
	created := order{Item: 1, Qty: 2, Status: "created", Rev: 1}
	paid := order{Item: 1, Qty: 2, Status: "paid", Rev: 2}
	other := order{Item: 9, Qty: 1, Status: "created", Rev: 1}
	ledger := []Change{
		{ID: 1, Op: opCreate, Row: created},
		{ID: 1, Op: opPay, Row: paid},
		{ID: 1, Op: opDelete, Row: paid, Deleted: true},
		{ID: 2, Op: opCreate, Row: other},
	}
	rec := func(id int64, o order) topicRecord { return topicRecord{id: id, row: o} }
	del := topicRecord{id: 1, deleted: true}
	tomb := topicRecord{id: 1, tombstone: true}

	t.Run("complete, with a re-send", func(t *testing.T) {
		// capture crashed after the delete and re-sent from rev 2.
		c := checkLedger(ledger, []topicRecord{rec(1, created), rec(1, paid), del, tomb, rec(1, paid), del, tomb, rec(2, other)})
		if c.Lost+c.Phantom+c.OutOfOrder != 0 || c.OnKafka != 4 || c.Resent != 2 || c.Tombstones != 2 || c.Records != 8 {
			t.Errorf("%+v", c)
		}
	})
	t.Run("lost", func(t *testing.T) {
		c := checkLedger(ledger, []topicRecord{rec(1, created), del, rec(2, other)})
		if c.Lost != 1 || c.OnKafka != 3 || len(c.Examples) != 1 {
			t.Errorf("%+v", c)
		}
	})
	t.Run("lost delete", func(t *testing.T) {
		c := checkLedger(ledger, []topicRecord{rec(1, created), rec(1, paid), rec(2, other)})
		if c.Lost != 1 {
			t.Errorf("%+v", c)
		}
	})
	t.Run("other values", func(t *testing.T) {
		wrong := paid
		wrong.Qty = 3
		c := checkLedger(ledger, []topicRecord{rec(1, created), rec(1, wrong), del, rec(2, other)})
		if c.Lost != 1 {
			t.Errorf("%+v", c)
		}
	})
	t.Run("phantom", func(t *testing.T) {
		c := checkLedger(ledger, []topicRecord{rec(1, created), rec(1, paid), del, rec(2, other), rec(3, other)})
		if c.Phantom != 1 {
			t.Errorf("%+v", c)
		}
	})
	t.Run("out of order", func(t *testing.T) {
		c := checkLedger(ledger, []topicRecord{rec(1, paid), rec(1, created), del, rec(2, other)})
		if c.OutOfOrder != 1 || c.Lost != 0 {
			t.Errorf("%+v", c)
		}
	})
	t.Run("state after the delete", func(t *testing.T) {
		c := checkLedger(ledger, []topicRecord{rec(1, created), del, rec(1, paid), rec(2, other)})
		if c.OutOfOrder != 1 {
			t.Errorf("%+v", c)
		}
	})
	t.Run("two partitions", func(t *testing.T) {
		moved := rec(1, paid)
		moved.partition = 3
		c := checkLedger(ledger, []topicRecord{rec(1, created), moved, del, rec(2, other)})
		if c.OutOfOrder != 1 {
			t.Errorf("%+v", c)
		}
	})
}

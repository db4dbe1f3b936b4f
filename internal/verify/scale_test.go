package verify

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// 100,000 orders over 10,000 items verify in seconds: the orders are
// summed in SQL, the row cache is read in pipelined batches.
func TestVerifiesAHundredThousandRows(t *testing.T) {
	s := newStores(t)
	const orders, items = 100000, 10000
	s.exec(s.src,
		`CREATE TABLE orders (id bigint PRIMARY KEY, item_id bigint, quantity int, status text, note text)`,
		`INSERT INTO orders SELECT g, 1 + g % 10000, 1 + g % 4, (ARRAY['created','paid','shipped','cancelled'])[1 + g % 4], 'n' || g
			FROM generate_series(1, 100000) g`)
	s.exec(s.inv,
		`CREATE TABLE inventory_items (item_id bigint PRIMARY KEY, on_hand bigint NOT NULL DEFAULT 0,
			reserved bigint NOT NULL DEFAULT 0, shipped bigint NOT NULL DEFAULT 0)`)
	// Fill the stores with what the sinks would have written, from the
	// source's own numbers.
	expected := map[int64][2]int64{}
	statuses := []string{"created", "paid", "shipped", "cancelled"}
	pipe := s.rdb.Pipeline()
	for g := int64(1); g <= orders; g++ {
		item, qty, st := 1+g%items, 1+g%4, statuses[g%4]
		e := expected[item]
		switch st {
		case "created", "paid":
			e[0] += qty
		case "shipped":
			e[1] += qty
		}
		expected[item] = e
		id := strconv.FormatInt(g, 10)
		pipe.HSet(s.ctx, "cdc:public.orders:"+id, "id", id, "item_id", strconv.FormatInt(item, 10),
			"quantity", strconv.FormatInt(qty, 10), "status", st, "note", "n"+id)
		pipe.Set(s.ctx, "cdcver:public.orders:"+id, "00000000000000100000000000000010", 0)
		if g%5000 == 0 {
			if _, err := pipe.Exec(s.ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	var values []string
	for item, e := range expected {
		values = append(values, "("+strconv.FormatInt(item, 10)+", 1000, "+strconv.FormatInt(e[0], 10)+", "+strconv.FormatInt(e[1], 10)+")")
		pipe.Set(s.ctx, "inventory:available:"+strconv.FormatInt(item, 10), strconv.FormatInt(1000-e[0]-e[1], 10), 0)
		pipe.HSet(s.ctx, "cdcsync:available:version", strconv.FormatInt(item, 10), "1")
	}
	if _, err := pipe.Exec(s.ctx); err != nil {
		t.Fatal(err)
	}
	s.exec(s.inv, "INSERT INTO inventory_items VALUES "+strings.Join(values, ","))

	start := time.Now()
	r := s.verify()
	took := time.Since(start)
	t.Logf("verified %d orders, %d items in %s", orders, items, took)
	if r.Drifted != 0 || r.Checks[3].Compared != orders || r.Checks[0].Compared != items {
		t.Fatalf("%+v", r.Checks)
	}
	if took > 15*time.Second {
		t.Errorf("verify took %s", took)
	}
}

package trace

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cdcsync/cdcsync/pipeline"
)

// decide compares each store with the row in the source. A store that
// matches is in sync. One that does not is in flight when the change it
// lacks is still on its way: a record on Kafka after the position the
// store holds, or a source change capture has not put on Kafka yet. It is
// drift when the store has applied the row's latest record, that record
// is the source's row, and the store still differs.
func decide(r *Report) Verdict {
	d := &decision{r: r, latest: latestRecord(r.Kafka.Records)}
	d.onKafka = d.kafkaHasSource()
	d.rowCache()
	d.projection()
	d.item()
	d.availability()
	v := Verdict{State: InSync}
	switch {
	case len(d.drift) > 0:
		v.State, v.Details = Drift, append(d.drift, d.behind...)
	case len(d.behind) > 0:
		v.State, v.Details = InFlight, d.behind
	}
	v.Behind = d.howFar
	return v
}

type decision struct {
	r       *Report
	latest  *Record
	onKafka bool
	drift   []string
	behind  []string
	howFar  string
}

// latestRecord is the row's last change record (tombstones only follow
// deletes and carry no position).
func latestRecord(recs []Record) *Record {
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Position != "" {
			return &recs[i]
		}
	}
	return nil
}

// kafkaHasSource reports whether the latest record on Kafka is the row as
// the source holds it now (deleted or absent included).
func (d *decision) kafkaHasSource() bool {
	src := d.r.Source
	if d.latest == nil {
		return !src.Exists
	}
	if !src.Exists {
		return d.latest.Op == string(pipeline.OpDelete)
	}
	if d.latest.row == nil {
		return false
	}
	for col, v := range src.Row {
		got, ok := d.latest.row[col]
		if !ok && slices.Contains(d.latest.unchanged, col) {
			continue // an unchanged TOASTed value: not in the record
		}
		if got != v {
			return false
		}
	}
	for col := range d.latest.row {
		if _, ok := src.Row[col]; !ok {
			return false
		}
	}
	return true
}

// lagging records why a store that differs is in flight, or reports
// drift when nothing explains the difference. pos is the position the
// store holds for the row ("" for none).
func (d *decision) lagging(store, pos, differs string) {
	if d.latest != nil && before(pos, d.latest.Position) {
		n, oldest := 0, time.Time{}
		for _, rec := range d.r.Kafka.Records {
			if rec.Position != "" && before(pos, rec.Position) {
				if n == 0 {
					oldest = rec.CommitTime
				}
				n++
			}
		}
		d.behind = append(d.behind, fmt.Sprintf("%s: %s; holds %s, %d change(s) on Kafka not applied yet (up to %s)",
			store, differs, orNone(pos), n, d.latest.Position))
		d.setHowFar(fmt.Sprintf("%d change(s) behind Kafka, the oldest committed %s ago", n, ago(oldest)))
		return
	}
	if !d.onKafka {
		d.behind = append(d.behind, fmt.Sprintf("%s: %s; the row's latest change is not on Kafka yet (capture behind)", store, differs))
		d.setHowFar("the latest change is not on Kafka yet (source WAL at " + d.r.SourceLSN + ")")
		return
	}
	d.drift = append(d.drift, fmt.Sprintf("%s: %s, although it applied the row's latest change (%s)", store, differs, orNone(pos)))
}

func (d *decision) setHowFar(s string) {
	if d.howFar == "" {
		d.howFar = s
	}
}

func (d *decision) rowCache() {
	rc := d.r.RowCache
	if rc == nil {
		return
	}
	src := d.r.Source
	switch {
	case src.Exists && !rc.Exists:
		d.lagging("row cache "+rc.Key, rc.Position, "missing")
	case !src.Exists && rc.Exists:
		d.lagging("row cache "+rc.Key, rc.Position, "holds a row the source does not have")
	case src.Exists:
		if diff := diffRows(src.Row, rc.Row); diff != "" {
			d.lagging("row cache "+rc.Key, rc.Position, diff)
		}
	}
}

func (d *decision) projection() {
	p := d.r.Projection
	if p == nil {
		return
	}
	src := d.r.Source
	live := p.Exists && !p.Deleted
	switch {
	case src.Exists && !live:
		d.lagging("inventory projection", p.Position, "has no live order")
	case !src.Exists && live:
		d.lagging("inventory projection", p.Position, "holds an order the source does not have")
	case src.Exists:
		got := map[string]string{}
		for col, val := range map[string]*int64{"item": p.ItemID, "quantity": p.Quantity} {
			if val != nil {
				got[col] = strconv.FormatInt(*val, 10)
			}
		}
		if p.Status != nil {
			got["status"] = *p.Status
		}
		if diff := diffRows(d.r.orderColumns, got); diff != "" {
			d.lagging("inventory projection", p.Position, diff)
		}
	}
}

func (d *decision) item() {
	it := d.r.Item
	if it == nil || (it.Reserved == it.ExpectedReserved && it.Shipped == it.ExpectedShipped) {
		return
	}
	differs := fmt.Sprintf("reserved %d shipped %d, the orders say %d and %d", it.Reserved, it.Shipped, it.ExpectedReserved, it.ExpectedShipped)
	store := fmt.Sprintf("inventory item %d", it.ItemID)
	// Other orders of the item may be in flight: only an applied-through
	// position at or past the source's WAL position read with the row
	// makes the difference drift.
	if applied, ok := d.appliedInventory(); ok && !applied.Less(d.sourcePosition()) {
		d.drift = append(d.drift, store+": "+differs+", although the inventory sink applied everything up to "+applied.String())
		return
	}
	d.behind = append(d.behind, store+": "+differs+" (changes of the item's orders in flight)")
	d.setHowFar("the inventory sink has not applied the source's WAL position " + d.r.SourceLSN + " yet")
}

func (d *decision) availability() {
	a := d.r.Availability
	if a == nil {
		return
	}
	switch {
	case a.Value == nil && d.r.Item != nil && (d.r.Item.Reserved != 0 || d.r.Item.Shipped != 0):
		d.drift = append(d.drift, fmt.Sprintf("availability %s: missing, inventory_items says %s", a.Key, a.Expected))
	case a.Value != nil && *a.Value != a.Expected:
		differs := fmt.Sprintf("availability %s: %s, inventory_items says %s", a.Key, *a.Value, a.Expected)
		// The cache holds the version of its value; a version other than
		// the one written with the inventory row is a refresh on its way.
		if it := d.r.Item; it != nil && it.Version != "" && a.Version != it.Version {
			d.behind = append(d.behind, fmt.Sprintf("%s (version %s, the row's %s: refresh in flight)", differs, strOr(a.Version, "none"), it.Version))
			d.setHowFar("the availability cache has not been refreshed from the inventory row yet")
			return
		}
		d.drift = append(d.drift, differs)
	}
}

func (d *decision) appliedInventory() (pipeline.EpochLSN, bool) {
	for _, a := range d.r.Applied {
		if a.Sink == "inventory" && a.Store == "inventory store" {
			pos, err := pipeline.ParseEpochLSN(a.LSN)
			return pos, err == nil
		}
	}
	return pipeline.EpochLSN{}, false
}

// sourcePosition is the source's WAL position with its epoch.
func (d *decision) sourcePosition() pipeline.EpochLSN {
	pos, _ := pipeline.ParseEpochLSN(d.r.SourceLSN)
	return pos
}

// before reports whether position a ("" for none) is before b.
func before(a, b string) bool {
	pb, err := pipeline.ParsePosition(b)
	if err != nil {
		return false
	}
	if a == "" {
		return true
	}
	pa, err := pipeline.ParsePosition(a)
	return err == nil && pa.Less(pb)
}

// diffRows describes how got differs from want ("" when equal).
func diffRows(want, got map[string]string) string {
	var out []string
	for _, col := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[col]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s missing (source %q)", col, want[col]))
		case g != want[col]:
			out = append(out, fmt.Sprintf("%s %q (source %q)", col, g, want[col]))
		}
	}
	for _, col := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[col]; !ok {
			out = append(out, fmt.Sprintf("%s %q (not in the source)", col, got[col]))
		}
	}
	return strings.Join(out, ", ")
}

func orNone(pos string) string {
	if pos == "" {
		return "no position"
	}
	return pos
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "an unknown time"
	}
	return time.Since(t).Round(time.Millisecond).String()
}

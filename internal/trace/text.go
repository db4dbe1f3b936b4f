package trace

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// WriteText prints the report for a person.
func WriteText(w io.Writer, r *Report) error {
	var b strings.Builder
	line := func(label, format string, args ...any) {
		fmt.Fprintf(&b, "%-13s %s\n", label, fmt.Sprintf(format, args...))
	}
	line("trace", "%s %s", r.Table, r.Key)
	if r.Source.Exists {
		line("source", "row now (WAL at %s): %s", r.SourceLSN, rowText(r.Source.Row))
	} else {
		line("source", "no such row now (WAL at %s)", r.SourceLSN)
	}
	line("kafka", "%s partition %d: %d record(s) of the key among %d read", r.Kafka.Topic, r.Kafka.Partition, len(r.Kafka.Records), r.Kafka.Scanned)
	for _, rec := range r.Kafka.Records {
		pos := rec.Position
		if pos == "" {
			pos = "-"
		}
		fmt.Fprintf(&b, "%-13s offset %-8d %-9s %-35s %s\n", "", rec.Offset, rec.Op, pos, rec.Time.UTC().Format("2006-01-02T15:04:05.000Z"))
	}
	if p := r.Projection; p != nil {
		switch {
		case !p.Exists:
			line("projection", "no order")
		case p.Deleted:
			line("projection", "deleted, at %s", p.Position)
		default:
			line("projection", "item %s, quantity %s, status %s, at %s", intText(p.ItemID), intText(p.Quantity), strText(p.Status), p.Position)
		}
	}
	if it := r.Item; it != nil {
		if it.Exists {
			line(fmt.Sprintf("item %d", it.ItemID), "on_hand %d, reserved %d, shipped %d (the orders say reserved %d, shipped %d)",
				it.OnHand, it.Reserved, it.Shipped, it.ExpectedReserved, it.ExpectedShipped)
		} else {
			line(fmt.Sprintf("item %d", it.ItemID), "no inventory row (the orders say reserved %d, shipped %d)", it.ExpectedReserved, it.ExpectedShipped)
		}
	}
	if rc := r.RowCache; rc != nil {
		if rc.Exists {
			line("row cache", "%s at %s: %s", rc.Key, orNone(rc.Position), rowText(rc.Row))
		} else {
			line("row cache", "%s: absent (version %s)", rc.Key, orNone(rc.Position))
		}
	}
	if a := r.Availability; a != nil {
		v := "absent"
		if a.Value != nil {
			v = *a.Value
		}
		line("availability", "%s = %s (inventory_items says %s; version %s)", a.Key, v, a.Expected, strOr(a.Version, "none"))
	}
	for _, a := range r.Applied {
		line("applied", "%s sink %s through %s", a.Store, a.Sink, a.LSN)
	}
	verdict := r.Verdict.State
	if r.Verdict.Behind != "" {
		verdict += ": " + r.Verdict.Behind
	}
	line("verdict", "%s", verdict)
	for _, d := range r.Verdict.Details {
		fmt.Fprintf(&b, "%-13s - %s\n", "", d)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func rowText(row map[string]string) string {
	parts := make([]string, 0, len(row))
	for _, k := range slices.Sorted(maps.Keys(row)) {
		parts = append(parts, k+"="+row[k])
	}
	return strings.Join(parts, " ")
}

func intText(v *int64) string {
	if v == nil {
		return "null"
	}
	return fmt.Sprint(*v)
}

func strText(v *string) string {
	if v == nil {
		return "null"
	}
	return *v
}

func strOr(s, none string) string {
	if s == "" {
		return none
	}
	return s
}

package status

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// WriteText writes the report as three aligned tables: the slot, the
// topics' partitions and the sinks' lag per partition.
func WriteText(w io.Writer, r *Report) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "SLOT\tACTIVE\tPID\tCONFIRMED LSN\tCURRENT LSN\tLAG")
	if r.Slot.Exists {
		pid := "-"
		if r.Slot.ActivePID != nil {
			pid = strconv.Itoa(int(*r.Slot.ActivePID))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Slot.Name, yesNo(r.Slot.Active), pid,
			orDash(r.Slot.ConfirmedLSN), r.Slot.CurrentLSN, Bytes(r.Slot.LagBytes))
	} else {
		fmt.Fprintf(tw, "%s\t(does not exist)\t-\t-\t%s\t-\n", r.Slot.Name, r.Slot.CurrentLSN)
	}
	if r.Slot.Lost != "" {
		fmt.Fprintf(tw, "LOST (%s): %s; capture refuses to continue (README: When the order database fails over)\n", r.Slot.Lost, r.Slot.LostDetail)
	}
	if r.Slot.Recovering != "" {
		fmt.Fprintf(tw, "RECOVERING: %s; the topics and sinks are not exact until it is done (README: When the order database fails over)\n", r.Slot.Recovering)
	}
	if r.Delivery.Mode == "exactly-once" {
		fmt.Fprintf(tw, "DELIVERY: exactly-once; checkpoint %s (the topics hold everything up to it, read_committed)\n", r.Delivery.CheckpointLSN)
	}

	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "TOPIC\tPARTITION\tSTART OFFSET\tEND OFFSET")
	for _, t := range r.Topics {
		if !t.Exists {
			fmt.Fprintf(tw, "%s\t(does not exist)\t\t\n", t.Name)
			continue
		}
		for _, p := range t.Partitions {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", t.Name, p.Partition, p.Start, p.End)
		}
	}

	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "SINK\tGROUP\tTOPIC\tPARTITION\tCOMMITTED\tEND OFFSET\tLAG")
	for _, s := range r.Sinks {
		if len(s.Partitions) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t(no topic yet)\t\t\t\t0\n", s.Name, s.Group)
			continue
		}
		for _, p := range s.Partitions {
			committed := "-"
			if p.Committed != nil {
				committed = strconv.FormatInt(*p.Committed, 10)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%d\n", s.Name, s.Group, p.Topic, p.Partition, committed, p.End, p.Lag)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := writeApplied(w, r); err != nil {
		return err
	}
	for _, s := range r.Sinks {
		fmt.Fprintf(w, "sink %s: %d records behind\n", s.Name, s.Lag)
	}
	return writeBackfills(w, r.Backfills)
}

// writeBackfills lists backfills not done: rows done of the total, the
// rate and the time left.
func writeBackfills(w io.Writer, bfs []Backfill) error {
	if len(bfs) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := newTable(w)
	fmt.Fprintln(tw, "BACKFILL\tTABLE\tKIND\tSTATUS\tROWS\tRATE\tETA")
	for _, b := range bfs {
		kind := "replay snapshot"
		if b.Initial {
			kind = "initial snapshot"
		}
		pct := 100.0
		if b.RowsTotal > 0 {
			pct = float64(b.RowsDone) * 100 / float64(b.RowsTotal)
		}
		eta := "-"
		if b.ETASeconds != nil {
			eta = (time.Duration(*b.ETASeconds) * time.Second).String()
		}
		status := b.Status
		if b.Error != "" {
			status += ": " + b.Error
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d/%d (%.0f%%)\t%.0f rows/s\t%s\n", b.ID, b.Table, kind, status, b.RowsDone, b.RowsTotal, pct, b.RowsPerSecond, eta)
	}
	return tw.Flush()
}

// writeApplied writes the stores' applied-through positions, when any
// store was read.
func writeApplied(w io.Writer, r *Report) error {
	shown := false
	for _, s := range r.Sinks {
		shown = shown || len(s.Applied) > 0
	}
	if !shown {
		return nil
	}
	fmt.Fprintln(w)
	tw := newTable(w)
	fmt.Fprintln(tw, "SINK\tSTORE\tAPPLIED THROUGH\tSOURCE TIME\tLAG\tBEHIND")
	for _, s := range r.Sinks {
		for _, a := range s.Applied {
			switch {
			case a.Error != "":
				fmt.Fprintf(tw, "%s\t%s\t(error: %s)\t\t\t\n", s.Name, a.Store, a.Error)
			case a.LSN == "":
				fmt.Fprintf(tw, "%s\t%s\t(none yet)\t-\t-\t-\n", s.Name, a.Store)
			default:
				at, lag := "-", "-"
				if a.SourceTime != nil {
					at = a.SourceTime.Format(time.RFC3339Nano)
				}
				if a.LagSeconds != nil {
					lag = (time.Duration(*a.LagSeconds * float64(time.Second))).Round(time.Millisecond).String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, a.Store, a.LSN, at, lag, Bytes(a.BehindBytes))
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w)
	return err
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// Bytes formats a byte count for people: 0 B, 512 B, 1.5 KiB, 20.0 MiB.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

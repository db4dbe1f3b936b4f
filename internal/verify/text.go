package verify

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteText writes the report for people: a table of the checks, then
// the listed drifts of each check with expected and actual values, then
// the verdict.
func WriteText(w io.Writer, r *Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if r.Cut != "" {
		// Live: changes after the cut are in flight, not drift.
		fmt.Fprintf(w, "compared at the consistent cut %s (every store had applied it); changes after it are in flight, not drift\n", r.Cut)
		fmt.Fprintln(tw, "CHECK\tCOMPARED\tDRIFTED\tCHANGED AFTER THE CUT")
		for _, c := range r.Checks {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", c.Label(), c.Compared, c.Drifted, c.AfterCut)
		}
	} else {
		fmt.Fprintln(tw, "CHECK\tCOMPARED\tDRIFTED")
		for _, c := range r.Checks {
			fmt.Fprintf(tw, "%s\t%d\t%d\n", c.Label(), c.Compared, c.Drifted)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, c := range r.Checks {
		if c.Drifted == 0 {
			continue
		}
		shown := ""
		if int64(len(c.Drifts)) < c.Drifted {
			shown = fmt.Sprintf(" (first %d shown)", len(c.Drifts))
		}
		fmt.Fprintf(w, "\n%s: %d drifted%s\n", c.Label(), c.Drifted, shown)
		for _, d := range c.Drifts {
			fmt.Fprintf(w, "  %s\n", d.Describe(c.Name))
		}
	}
	var err error
	if r.Drifted == 0 {
		_, err = fmt.Fprintln(w, "\nno drift")
	} else {
		_, err = fmt.Fprintf(w, "\ndrift: %d items or keys differ\n", r.Drifted)
	}
	return err
}

// Label names the check, with its table for a row cache check.
func (c Check) Label() string {
	if c.Table != "" {
		return c.Name + " " + c.Table
	}
	return c.Name
}

// Describe renders the drift on one line, e.g. `item 7: differs:
// reserved expected "5", actual "4"`.
func (d Drift) Describe(check string) string {
	var b strings.Builder
	if check == CheckInventory {
		b.WriteString("item ")
	}
	b.WriteString(d.Key)
	b.WriteString(": ")
	b.WriteString(d.Problem)
	for i, f := range d.Fields {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s expected %s, actual %s", f.Name, shown(f.Expected), shown(f.Actual))
	}
	return b.String()
}

func shown(s *string) string {
	if s == nil {
		return "(absent)"
	}
	return strconv.Quote(*s)
}

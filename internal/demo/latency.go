package demo

import (
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

// latencyQuantiles estimates quantiles of the sinks' end-to-end histogram
// (commit in the order database to applied in the store) per sink, by
// linear interpolation inside the bucket that holds each quantile.
func latencyQuantiles(reg prometheus.Gatherer, qs ...float64) (map[string][]float64, error) {
	families, err := reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather metrics: %w", err)
	}
	out := map[string][]float64{}
	for _, f := range families {
		if f.GetName() != "cdcsync_sink_end_to_end_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			sinkName := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "sink" {
					sinkName = l.GetValue()
				}
			}
			h := m.GetHistogram()
			total := float64(h.GetSampleCount())
			if total == 0 {
				continue
			}
			buckets := h.GetBucket()
			vals := make([]float64, len(qs))
			for i, q := range qs {
				rank := q * total
				lower, prevCount := 0.0, 0.0
				vals[i] = math.Inf(1)
				for _, b := range buckets {
					count := float64(b.GetCumulativeCount())
					if count >= rank {
						upper := b.GetUpperBound()
						frac := 0.0
						if count > prevCount {
							frac = (rank - prevCount) / (count - prevCount)
						}
						vals[i] = lower + frac*(upper-lower)
						break
					}
					lower, prevCount = b.GetUpperBound(), count
				}
			}
			out[sinkName] = vals
		}
	}
	return out, nil
}

// writeLatency prints p50 and p99 commit-to-applied latency per sink.
func writeLatency(w io.Writer, reg prometheus.Gatherer) {
	qs, err := latencyQuantiles(reg, 0.5, 0.99)
	if err != nil || len(qs) == 0 {
		return
	}
	names := make([]string, 0, len(qs))
	for n := range qs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "commit-to-applied latency, %s sink: p50 %.1f ms, p99 %.1f ms (from the end-to-end histogram's buckets)\n",
			n, qs[n][0]*1000, qs[n][1]*1000)
	}
}

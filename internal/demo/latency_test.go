package demo

import (
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestLatencyQuantilesInterpolateInsideBuckets(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cdcsync_sink_end_to_end_seconds", Buckets: []float64{0.01, 0.02, 0.04},
	}, []string{"sink"})
	reg.MustRegister(h)
	for range 50 {
		h.WithLabelValues("inventory").Observe(0.005) // bucket (0, 0.01]
	}
	for range 50 {
		h.WithLabelValues("inventory").Observe(0.03) // bucket (0.02, 0.04]
	}
	qs, err := latencyQuantiles(reg, 0.5, 0.99)
	if err != nil {
		t.Fatal(err)
	}
	got := qs["inventory"]
	if math.Abs(got[0]-0.01) > 1e-9 {
		t.Errorf("p50 = %v, want 0.01 (top of the first bucket)", got[0])
	}
	if want := 0.02 + 0.98*0.02; math.Abs(got[1]-want) > 1e-9 {
		t.Errorf("p99 = %v, want %v", got[1], want)
	}
}

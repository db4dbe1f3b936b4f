package soak

import (
	"reflect"
	"testing"
)

func TestSumCounter(t *testing.T) {
	body := []byte(`# HELP cdcsync_sink_events_skipped_total Change events that changed nothing.
# TYPE cdcsync_sink_events_skipped_total counter
cdcsync_sink_events_skipped_total{reason="stale",sink="inventory"} 12
cdcsync_sink_events_skipped_total{reason="superseded",sink="inventory"} 5
cdcsync_sink_events_skipped_total{sink="redis",reason="stale"} 7
cdcsync_sink_events_skipped_total{reason="stale",sink="redis"} 1e+01
cdcsync_sink_events_skipped_total_other{reason="stale",sink="redis"} 99
cdcsync_sink_events_applied_total{sink="redis"} 100
`)
	got, err := sumCounter(body, staleMetric, map[string]string{"reason": "stale"}, "sink")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"inventory": 12, "redis": 17}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := sumCounter([]byte(`cdcsync_sink_events_skipped_total{reason="stale 3`), staleMetric, nil, "sink"); err == nil {
		t.Error("no error for a broken line")
	}
}

func TestParseLabels(t *testing.T) {
	got, err := parseLabels(`a="x",b="q\"uo\\te\n", c="" `)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a": "x", "b": "q\"uo\\te\n", "c": ""}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, bad := range []string{`a`, `a=x`, `a="x`} {
		if _, err := parseLabels(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

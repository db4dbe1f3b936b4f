package soak

import (
	"testing"
	"time"
)

func TestLoadSettings(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	s, err := LoadSettings(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if s.Duration != defaultDuration || s.Rate != defaultRate || s.Writers != 4 || s.Items != 200 || s.Delivery != deliveryExactlyOnce {
		t.Errorf("defaults: %+v", s)
	}
	if s.Seed >= 1<<53 {
		t.Errorf("random seed %d does not fit in 53 bits", s.Seed)
	}
	s, err = LoadSettings(env(map[string]string{envDuration: "30m", envSeed: "12345", envRate: "250", envLogDir: "/tmp/x", envDelivery: deliveryAtLeastOnce}))
	if err != nil {
		t.Fatal(err)
	}
	if s.Duration != 30*time.Minute || s.Seed != 12345 || s.Rate != 250 || s.LogDir != "/tmp/x" || s.Delivery != deliveryAtLeastOnce {
		t.Errorf("from the environment: %+v", s)
	}
	for _, bad := range []map[string]string{
		{envDuration: "soon"}, {envDuration: "5s"}, {envSeed: "-1"}, {envSeed: "x"}, {envRate: "0"}, {envRate: "fast"}, {envDelivery: "exactly_once"},
	} {
		if _, err := LoadSettings(env(bad)); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

package soak

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strconv"
	"time"
)

// Environment variables of the soak (test settings, not daemon settings).
const (
	envDuration = "CDCSYNC_SOAK_DURATION" // how long the writers run, e.g. 30m
	envSeed     = "CDCSYNC_SOAK_SEED"     // fault schedule seed; random when unset
	envRate     = "CDCSYNC_SOAK_RATE"     // writer transactions per second, all writers together
	envLogDir   = "CDCSYNC_SOAK_LOG_DIR"  // keep every process's log there
	envDelivery = "CDCSYNC_SOAK_DELIVERY" // capture's CDCSYNC_DELIVERY; exactly-once (its default) unless set
)

// Defaults keep the soak that runs in `make test` near two minutes in all
// on a 2-core machine (setup, writes, drain and verify).
const (
	defaultDuration = 90 * time.Second
	defaultRate     = 100
	minDuration     = 20 * time.Second
)

// Settings are one soak run's parameters.
type Settings struct {
	Duration time.Duration // writers run this long; faults happen inside it
	Seed     uint64
	Rate     int // transactions per second over all writers
	Writers  int
	Items    int // distinct item ids the orders use
	LogDir   string
	// Delivery is capture's CDCSYNC_DELIVERY. Exactly once, the broker
	// is restarted, never killed (ForDelivery).
	Delivery string
}

// LoadSettings reads the soak's environment variables.
func LoadSettings(getenv func(string) string) (Settings, error) {
	s := Settings{Duration: defaultDuration, Rate: defaultRate, Writers: 4, Items: 200, LogDir: getenv(envLogDir), Delivery: deliveryExactlyOnce}
	switch v := getenv(envDelivery); v {
	case "":
	case deliveryExactlyOnce, deliveryAtLeastOnce:
		s.Delivery = v
	default:
		return s, fmt.Errorf("%s: want %s or %s, got %q", envDelivery, deliveryExactlyOnce, deliveryAtLeastOnce, v)
	}
	if v := getenv(envDuration); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return s, fmt.Errorf("%s: %w", envDuration, err)
		}
		if d < minDuration {
			return s, fmt.Errorf("%s: %v is too short to fit a fault, at least %v", envDuration, d, minDuration)
		}
		s.Duration = d
	}
	if v := getenv(envSeed); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return s, fmt.Errorf("%s: %w", envSeed, err)
		}
		s.Seed = seed
	} else {
		s.Seed = randomSeed()
	}
	if v := getenv(envRate); v != "" {
		r, err := strconv.Atoi(v)
		if err != nil || r <= 0 {
			return s, fmt.Errorf("%s: want a positive number of transactions per second, got %q", envRate, v)
		}
		s.Rate = r
	}
	return s, nil
}

// Capture's delivery modes, as CDCSYNC_DELIVERY spells them.
const (
	deliveryExactlyOnce = "exactly-once"
	deliveryAtLeastOnce = "at-least-once"
)

// randomSeed draws a seed that fits in 53 bits, so that it survives being
// copied through tools that read numbers as float64.
func randomSeed() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) >> 11
}

package httpserver

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Readiness is what /readyz reports. A daemon is handed one and says when
// it can do its work (connected, slot acquired, partitions assigned) and
// when it cannot, with a reason an operator can act on. It starts not
// ready ("starting"). Safe for concurrent use; the zero value is not ready.
type Readiness struct {
	mu     sync.Mutex
	ready  bool
	reason string
}

// NewReadiness returns a Readiness that is not ready, reason "starting".
func NewReadiness() *Readiness {
	return &Readiness{reason: "starting"}
}

// SetReady marks the daemon ready.
func (r *Readiness) SetReady() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ready, r.reason = true, ""
}

// SetNotReady marks the daemon not ready and says why.
func (r *Readiness) SetNotReady(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if reason == "" {
		reason = "not ready"
	}
	r.ready, r.reason = false, reason
}

// Ready reports the state and, when not ready, the reason.
func (r *Readiness) Ready() (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.ready && r.reason == "" {
		return false, "not ready"
	}
	return r.ready, r.reason
}

// Collector exports the readiness as the gauge cdcsync_ready (1 ready, 0
// not), so that an alert can fire on a daemon that stays not ready.
func (r *Readiness) Collector() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cdcsync_ready",
		Help: "1 while the daemon reports ready on /readyz, 0 while it does not.",
	}, func() float64 {
		if ok, _ := r.Ready(); ok {
			return 1
		}
		return 0
	})
}

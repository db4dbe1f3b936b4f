package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cdcsync/cdcsync/consistency"
	"github.com/cdcsync/cdcsync/pipeline"
)

// Bounds of GET /applied?lsn=…&timeout=…: a wait without a timeout gets
// the default, and none may hold a request longer than the maximum.
const (
	defaultAppliedWait = 10 * time.Second
	maxAppliedWait     = 5 * time.Minute
)

// Handler serves GET /applied: each sink's applied-through position and
// how far behind the source it is, in time (consistency.Applied as JSON).
// With ?lsn=<LSN> (a consistency.Token: "<epoch>@" first when the token has
// a source epoch) it first waits until every sink of the process has
// applied that position: 200 once they have, 504 when ?timeout= (a Go duration,
// default 10s, at most 5m) passes first, 400 for a bad parameter.
func (p *AppliedPositions) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		status := http.StatusOK
		var waitErr string
		if s := q.Get("lsn"); s != "" {
			lsn, err := pipeline.ParseEpochLSN(s)
			if err != nil {
				http.Error(w, fmt.Sprintf("lsn %q: want an LSN as Postgres prints it, e.g. 0/16B3748, after <epoch>@ in a source epoch above 0", s), http.StatusBadRequest)
				return
			}
			timeout := defaultAppliedWait
			if ts := q.Get("timeout"); ts != "" {
				if timeout, err = time.ParseDuration(ts); err != nil || timeout < 0 || timeout > maxAppliedWait {
					http.Error(w, fmt.Sprintf("timeout %q: want a duration from 0s to %v, e.g. 2s", ts, maxAppliedWait), http.StatusBadRequest)
					return
				}
			}
			ctx, cancel := context.WithTimeout(r.Context(), timeout)
			err = p.Wait(ctx, lsn)
			cancel()
			switch {
			case err == nil:
			case r.Context().Err() != nil:
				return // the client left
			case errors.Is(err, context.DeadlineExceeded):
				status = http.StatusGatewayTimeout
				waitErr = fmt.Sprintf("not every sink applied %s within %v", lsn, timeout)
			}
		}
		body := p.report(time.Now())
		body.Error = waitErr
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	})
}

// report renders the positions as the /applied body.
func (p *AppliedPositions) report(now time.Time) consistency.Applied {
	out := consistency.Applied{Sinks: []consistency.SinkApplied{}}
	var low pipeline.EpochLSN
	known := true
	for i, s := range p.Snapshot() {
		sa := consistency.SinkApplied{Sink: s.Sink}
		if !s.known() {
			known = false
		} else {
			sa.LSN = s.EpochLSN.String()
			if i == 0 || s.Less(low) {
				low = s.EpochLSN
			}
		}
		if !s.AsOf.IsZero() {
			at := s.AsOf.UTC()
			lag := max(0, now.Sub(s.AsOf).Seconds())
			sa.SourceTime, sa.LagSeconds = &at, &lag
		}
		out.Sinks = append(out.Sinks, sa)
	}
	if known && len(out.Sinks) > 0 {
		out.LSN = low.String()
	}
	return out
}

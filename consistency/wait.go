package consistency

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"
)

// Waits ask the store at once, then after 1 ms, doubling up to 10 ms: a
// token usually becomes visible within tens of milliseconds, and many
// writers waiting at once must not flood the store with reads.
const (
	firstPoll = time.Millisecond
	maxPoll   = 10 * time.Millisecond
)

// WaitRedis waits until Redis holds sink's changes up to tok: the
// availability cache for SinkInventory, the row cache for SinkRedis (key
// cdcsync:applied:<sink>). It returns a *TimeoutError (ErrTimeout) after
// timeout, and ctx's error if ctx ends first.
func WaitRedis(ctx context.Context, rdb redis.UniversalClient, sink string, tok Token, timeout time.Duration) error {
	key := "cdcsync:applied:" + sink
	return poll(ctx, "redis "+sink, tok, timeout, func(ctx context.Context) (Token, error) {
		s, err := rdb.Get(ctx, key).Result()
		if errors.Is(err, redis.Nil) {
			return Token{}, nil
		}
		if err != nil {
			return Token{}, fmt.Errorf("read %s: %w", key, err)
		}
		return ParseToken(s)
	})
}

// WaitInventory waits until the inventory store (its cdcsync_applied row
// for the inventory sink) holds the changes up to tok. q is a connection
// or pool to the inventory store.
func WaitInventory(ctx context.Context, q Querier, tok Token, timeout time.Duration) error {
	return poll(ctx, "inventory store", tok, timeout, func(ctx context.Context) (Token, error) {
		var (
			epoch *string
			s     string
		)
		// The epoch through to_jsonb: a store from before epochs has
		// no such column (epoch 0).
		err := q.QueryRow(ctx, `SELECT to_jsonb(a) ->> 'epoch', lsn::text FROM cdcsync_applied a WHERE sink = 'inventory'`).Scan(&epoch, &s)
		if err != nil {
			return Token{}, fmt.Errorf("read cdcsync_applied: %w", err)
		}
		if epoch != nil && *epoch != "0" {
			s = *epoch + "@" + s
		}
		return ParseToken(s)
	})
}

// poll asks read until it reports at least tok.
func poll(ctx context.Context, store string, tok Token, timeout time.Duration, read func(context.Context) (Token, error)) error {
	start := time.Now()
	deadline := start.Add(timeout)
	var applied Token
	t := time.NewTimer(0)
	defer t.Stop()
	interval := firstPoll
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		a, err := read(rctx)
		cancel()
		switch {
		case err == nil:
			if !a.Reached(applied) {
				applied = a
			}
			if tok.Reached(applied) {
				return nil
			}
		case ctx.Err() != nil:
			return ctx.Err()
		case time.Now().Before(deadline):
			// A store that does not answer for a moment is waited for
			// like one that has not applied the token yet.
		default:
			return errors.Join(&TimeoutError{Store: store, Token: tok, Applied: applied, Waited: time.Since(start)}, err)
		}
		if !time.Now().Before(deadline) {
			return &TimeoutError{Store: store, Token: tok, Applied: applied, Waited: time.Since(start)}
		}
		t.Reset(min(interval, time.Until(deadline)))
		interval = min(2*interval, maxPoll)
	}
}

// Applied is the body of the sink daemon's GET /applied.
type Applied struct {
	// LSN is the lowest applied-through position of the process's sinks
	// ("" while some sink has none yet), as a Token prints it: after
	// "<epoch>@" in a source epoch above 0.
	LSN   string        `json:"lsn"`
	Sinks []SinkApplied `json:"sinks"`
	// Error says why a wait (?lsn=) failed; empty otherwise.
	Error string `json:"error,omitempty"`
}

// SinkApplied is one sink in Applied.
type SinkApplied struct {
	Sink string `json:"sink"`
	// LSN is the sink's applied-through position ("" while unknown).
	LSN string `json:"lsn"`
	// SourceTime is when the source was at LSN; LagSeconds is how long
	// ago that was: how far, in time, the sink's store is behind.
	SourceTime *time.Time `json:"source_time,omitempty"`
	LagSeconds *float64   `json:"lag_seconds,omitempty"`
}

// WaitHTTP waits through a sink daemon's GET /applied?lsn=…&timeout=…
// (baseURL is the daemon's CDCSYNC_HTTP_ADDR as a URL, e.g.
// http://sink:8080): it returns nil once every sink of that process has
// applied tok, and a *TimeoutError (ErrTimeout) when the daemon answers
// 504. A nil client means http.DefaultClient.
func WaitHTTP(ctx context.Context, client *http.Client, baseURL string, tok Token, timeout time.Duration) error {
	if client == nil {
		client = http.DefaultClient
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		return fmt.Errorf("wait over http: %w", err)
	}
	u = u.JoinPath("applied")
	u.RawQuery = url.Values{"lsn": {tok.String()}, "timeout": {timeout.String()}}.Encode()
	start := time.Now()
	// The server holds the request for up to timeout; allow for the trip.
	rctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("wait over http: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("wait over http %s: %w", u.Redacted(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("wait over http %s: read body: %w", u.Redacted(), err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusGatewayTimeout:
		var a Applied
		_ = json.Unmarshal(body, &a)
		applied, _ := ParseToken(a.LSN)
		return &TimeoutError{Store: u.Redacted(), Token: tok, Applied: applied, Waited: time.Since(start)}
	}
	return fmt.Errorf("wait over http %s: status %s: %.200s", u.Redacted(), resp.Status, body)
}

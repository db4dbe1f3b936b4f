package status

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
	"github.com/cdcsync/cdcsync/sink"
)

// Applied is a store's applied-through position (read-your-writes): every
// change committed in the source at or before LSN is visible in it.
type Applied struct {
	// Store names where the position is kept: "inventory store",
	// "availability cache" or "row cache".
	Store string `json:"store"`
	// LSN is empty while the store has none yet.
	LSN string `json:"lsn"`
	// SourceTime is when the source was at LSN.
	SourceTime *time.Time `json:"source_time,omitempty"`
	// LagSeconds is how far behind the source the store is, in time: 0
	// when it has applied the source's current WAL position, else how
	// long ago the source was at LSN.
	LagSeconds *float64 `json:"lag_seconds,omitempty"`
	// BehindBytes is the source's WAL between LSN and its current
	// position.
	BehindBytes int64 `json:"behind_bytes"`
	// Error says why the position could not be read.
	Error string `json:"error,omitempty"`
}

// appliedStores connects to the stores whose applied-through positions
// are reported; each is nil when its URL is not configured.
type appliedStores struct {
	inv *pgxpool.Pool
	rdb *redis.Client
}

func openAppliedStores(ctx context.Context, cfg config.Status) (*appliedStores, error) {
	s := &appliedStores{}
	if cfg.InventoryURL != "" {
		pcfg, err := pgxpool.ParseConfig(cfg.InventoryURL)
		if err != nil {
			return nil, &config.Error{Var: config.Prefix + "_INVENTORY_URL", Problem: "is not a usable postgres connection string"}
		}
		pcfg.MaxConns = 1
		if s.inv, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
			return nil, fmt.Errorf("inventory store: %w", err)
		}
	}
	if cfg.RedisURL != "" {
		opts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			s.close()
			return nil, &config.Error{Var: config.Prefix + "_REDIS_URL", Problem: "cannot be used"}
		}
		s.rdb = redis.NewClient(opts)
	}
	return s, nil
}

func (s *appliedStores) close() {
	if s.inv != nil {
		s.inv.Close()
	}
	if s.rdb != nil {
		_ = s.rdb.Close()
	}
}

// read returns the applied-through positions of sink's stores that are
// configured; current is the source's WAL position read just before.
func (s *appliedStores) read(ctx context.Context, sinkName string, current pipeline.EpochLSN, now time.Time) []Applied {
	var out []Applied
	if sinkName == config.SinkInventory && s.inv != nil {
		a := Applied{Store: "inventory store"}
		var lsn string
		var at *time.Time
		// The epoch through to_jsonb: a store from before epochs has no
		// such column.
		err := s.inv.QueryRow(ctx, `SELECT CASE WHEN coalesce(to_jsonb(a) ->> 'epoch', '0') = '0' THEN '' ELSE (to_jsonb(a) ->> 'epoch') || '@' END
			|| lsn::text, source_time FROM cdcsync_applied a WHERE sink = $1`, sinkName).Scan(&lsn, &at)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			a.Error = err.Error()
		default:
			a.fill(lsn, at, current, now)
		}
		out = append(out, a)
	}
	if s.rdb != nil {
		a := Applied{Store: "row cache"}
		if sinkName == config.SinkInventory {
			a.Store = "availability cache"
		}
		key := sink.AppliedKey(sinkName)
		vals, err := s.rdb.MGet(ctx, key, key+":source_ts").Result()
		if err != nil {
			a.Error = err.Error()
		} else if lsn, ok := vals[0].(string); ok {
			var at *time.Time
			if ms, err := strconv.ParseInt(fmt.Sprint(vals[1]), 10, 64); err == nil {
				t := time.UnixMilli(ms)
				at = &t
			}
			a.fill(lsn, at, current, now)
		}
		out = append(out, a)
	}
	return out
}

// fill sets a from a store's applied-through position text. current is
// the source's position now, in the source epoch a change committed now
// is in: a store in an older epoch is behind by an unknown number of bytes
// (the new primary's LSNs do not follow on from the old one's).
func (a *Applied) fill(lsn string, at *time.Time, current pipeline.EpochLSN, now time.Time) {
	l, err := pipeline.ParseEpochLSN(lsn)
	if err != nil {
		a.Error = fmt.Sprintf("applied position %q: %v", lsn, err)
		return
	}
	if l.IsZero() {
		return // the initial 0/0: nothing applied through anything yet
	}
	a.LSN = l.String()
	behind := l.Less(current)
	if behind && l.Epoch == current.Epoch {
		a.BehindBytes = int64(current.LSN - l.LSN)
	}
	if at != nil {
		t := at.UTC()
		a.SourceTime = &t
		lag := 0.0
		if behind {
			lag = max(0, now.Sub(t).Seconds())
		}
		a.LagSeconds = &lag
	}
}

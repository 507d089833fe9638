package consul

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/nullnet/nullnet/lib/retry"
)

// WatchConfig tunes a blocking-query loop.
type WatchConfig struct {
	// Name appears in logs ("port table", "replicas of redis" ...).
	Name   string
	Logger hclog.Logger
	// Wait is the blocking query's wait (default 5 min, as Consul's maximum is 10 min).
	Wait time.Duration
	// MinInterval rate-limits the loop: two queries are never closer than this (default 50 ms),
	// so a flapping index cannot spin.
	MinInterval time.Duration
	// MaxBackoff caps the exponential backoff after errors (default 10 s).
	MaxBackoff time.Duration
	// OnError is called after each failed query with the number of failures in a row
	// (optional; e.g. to emit one event per outage, on failures == 1).
	OnError func(err error, failures int)
}

// QueryFunc runs one blocking query at index with the given wait and returns the result and
// Consul's X-Consul-Index.
type QueryFunc[T any] func(ctx context.Context, index uint64, wait time.Duration) (T, uint64, error)

// Watch runs query in a loop until ctx ends, calling onResult after every successful query whose
// index moved (and once for the first result). It follows Consul's rules for blocking queries:
// the index is reset to 0 when it goes backwards (a restored or restarted Consul), is never
// passed as 0 after the first answer (kept >= 1), errors back off exponentially with jitter up
// to MaxBackoff, and nothing is delivered during an outage, so callers keep their last-known-good
// state until Consul answers again.
func Watch[T any](ctx context.Context, cfg WatchConfig, query QueryFunc[T], onResult func(T, uint64)) {
	if cfg.Wait == 0 {
		cfg.Wait = 5 * time.Minute
	}
	if cfg.MinInterval == 0 {
		cfg.MinInterval = 50 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	var index uint64
	var failures int
	first := true
	for ctx.Err() == nil {
		started := time.Now()
		res, next, err := query(ctx, index, cfg.Wait)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			d := retry.Backoff(100*time.Millisecond, cfg.MaxBackoff, failures)
			lvl := logger.Warn
			if failures > 1 {
				lvl = logger.Debug // one warning per outage is enough; the rest are noise
			}
			lvl("Consul query failed; keeping the last known state", "watch", cfg.Name, "error", err,
				"retry_in", d.Round(time.Millisecond), "failures", failures)
			if cfg.OnError != nil {
				cfg.OnError(err, failures)
			}
			if !retry.Sleep(ctx, d) {
				return
			}
			// After a failure Consul may have restarted without its state, its index now far
			// below ours (or 1, which Consul reports for a resource that does not exist): a
			// query at our index would block for the whole wait before the reset rule below
			// could see it. One non-blocking read (index 0) after each failure answers at once;
			// it cannot spin, as failures back off. Callers must treat the possibly unchanged
			// result idempotently.
			index = 0
			continue
		}
		if failures > 0 {
			logger.Info("Consul query recovered", "watch", cfg.Name, "after_failures", failures)
			failures = 0
		}
		switch {
		case next < index:
			// The index went backwards: start over with a non-blocking read.
			logger.Debug("Consul index went backwards; resetting", "watch", cfg.Name, "old", index, "new", next)
			index = 0
			onResult(res, next)
			continue
		case first || next != index:
			first = false
			onResult(res, next)
		}
		index = max(next, 1)
		if wait := cfg.MinInterval - time.Since(started); wait > 0 {
			if !retry.Sleep(ctx, wait) {
				return
			}
		}
	}
}

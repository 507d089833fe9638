// Package retry is the project's one retry helper: capped exponential backoff, jitter and a
// context-aware sleep. It knows nothing about what is being retried.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Delay is base doubled attempt times, capped at ceiling. It is deterministic; attempt <= 0
// gives base (capped), a non-positive base gives ceiling, and doubling never overflows.
func Delay(base, ceiling time.Duration, attempt int) time.Duration {
	if ceiling <= 0 {
		return 0
	}
	if base <= 0 {
		return ceiling
	}
	d := base
	for i := 0; i < attempt && d < ceiling; i++ {
		if d > ceiling/2 {
			return ceiling
		}
		d *= 2
	}
	return min(d, ceiling)
}

// Backoff is Delay with jitter in [d/2, d], so that many retrying parties do not line up.
func Backoff(base, ceiling time.Duration, attempt int) time.Duration {
	d := Delay(base, ceiling, attempt)
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// Jitter spreads d uniformly by ±fraction (0.2 means ±20 %). A non-positive d or fraction
// returns d unchanged; fraction is capped at 1 so the result is never negative.
func Jitter(d time.Duration, fraction float64) time.Duration {
	if d <= 0 || !(fraction > 0) {
		return d
	}
	fraction = min(fraction, 1)
	return d + time.Duration((rand.Float64()*2-1)*fraction*float64(d))
}

// Sleep waits d or until ctx ends; it reports whether the full wait happened.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

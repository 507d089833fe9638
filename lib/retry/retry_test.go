package retry

import (
	"context"
	"math"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	for _, tc := range []struct {
		name          string
		base, ceiling time.Duration
		attempt       int
		want          time.Duration
	}{
		{"first attempt is base", 100 * time.Millisecond, time.Second, 0, 100 * time.Millisecond},
		{"negative attempt is base", 100 * time.Millisecond, time.Second, -3, 100 * time.Millisecond},
		{"doubles", 100 * time.Millisecond, time.Second, 2, 400 * time.Millisecond},
		{"capped", 100 * time.Millisecond, time.Second, 4, time.Second},
		{"huge attempt capped", 100 * time.Millisecond, time.Minute, math.MaxInt, time.Minute},
		{"no overflow near MaxInt64", math.MaxInt64 / 3, math.MaxInt64, 5, math.MaxInt64},
		{"base above ceiling", 2 * time.Second, time.Second, 0, time.Second},
		{"zero base gives ceiling", 0, time.Second, 3, time.Second},
		{"zero ceiling", time.Second, 0, 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Delay(tc.base, tc.ceiling, tc.attempt); got != tc.want {
				t.Fatalf("Delay(%v, %v, %d) = %v, want %v", tc.base, tc.ceiling, tc.attempt, got, tc.want)
			}
		})
	}
}

func TestBackoffBounds(t *testing.T) {
	for _, tc := range []struct {
		base, ceiling time.Duration
		attempt       int
	}{
		{100 * time.Millisecond, 10 * time.Second, 0},
		{100 * time.Millisecond, 10 * time.Second, 3},
		{100 * time.Millisecond, 10 * time.Second, 1000},
		{time.Nanosecond, time.Nanosecond, 0},
		{0, 0, 0},
		{time.Hour, math.MaxInt64, 1 << 30},
	} {
		d := Delay(tc.base, tc.ceiling, tc.attempt)
		for range 200 {
			got := Backoff(tc.base, tc.ceiling, tc.attempt)
			if got < d/2 || got > d {
				t.Fatalf("Backoff(%v, %v, %d) = %v, want in [%v, %v]", tc.base, tc.ceiling, tc.attempt, got, d/2, d)
			}
		}
	}
}

func TestJitter(t *testing.T) {
	for _, tc := range []struct {
		d        time.Duration
		fraction float64
		lo, hi   time.Duration
	}{
		{time.Second, 0.2, 800 * time.Millisecond, 1200 * time.Millisecond},
		{time.Second, 0, time.Second, time.Second},
		{time.Second, -1, time.Second, time.Second},
		{time.Second, math.NaN(), time.Second, time.Second},
		{time.Second, 5, 0, 2 * time.Second},
		{0, 0.2, 0, 0},
		{-time.Second, 0.2, -time.Second, -time.Second},
	} {
		for range 200 {
			if got := Jitter(tc.d, tc.fraction); got < tc.lo || got > tc.hi {
				t.Fatalf("Jitter(%v, %v) = %v, want in [%v, %v]", tc.d, tc.fraction, got, tc.lo, tc.hi)
			}
		}
	}
}

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep with a live context reported an interrupted wait")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep with a cancelled context reported a full wait")
	}
	if time.Since(start) > time.Second {
		t.Fatal("Sleep did not return promptly on a cancelled context")
	}
}

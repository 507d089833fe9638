package config

import (
	"strings"
	"testing"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in    string
		rate  float64
		burst int
		err   string
	}{
		{in: "20/s", rate: 20, burst: 20},
		{in: "600/m", rate: 10, burst: 10},
		{in: "1/m", rate: 1.0 / 60, burst: 1},
		{in: "2.5/s", rate: 2.5, burst: 3},
		{in: "20/s burst 40", rate: 20, burst: 40},
		{in: " 20 / s  burst  5 ", rate: 20, burst: 5},
		{in: "3600/h", rate: 1, burst: 1},
		{in: "0/s", err: "more than 0"},
		{in: "20", err: "not a rate"},
		{in: "20/d", err: "not a rate"},
		{in: "-1/s", err: "not a rate"},
		{in: "20/s burst 0", err: "burst"},
		{in: "20/s burst 99999999999999999999", err: "burst"},
		{in: "2000000/s", err: "more than"},
	}
	for _, tc := range tests {
		r, err := ParseRate(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseRate(%q) = %+v, %v; want error with %q", tc.in, r, err, tc.err)
			}
			continue
		}
		if err != nil || r.PerSecond != tc.rate || r.Burst != tc.burst {
			t.Errorf("ParseRate(%q) = %+v, %v; want %v burst %d", tc.in, r, err, tc.rate, tc.burst)
		}
	}
}

// FuzzParseRate: any string gives a positive bounded rate with a burst of at least 1, or an
// error; String's form parses back to the same rate.
func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"20/s", "600/m", "20/s burst 40", "1.5/h", "0/s", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			return
		}
		if r.PerSecond <= 0 || r.PerSecond > maxRatePerSecond || r.Burst < 1 || r.Burst > maxRateBurst {
			t.Fatalf("%q → %+v", s, r)
		}
		again, err := ParseRate(r.String())
		if err != nil || again != r {
			t.Fatalf("%q → %+v → %q → %+v, %v", s, r, r.String(), again, err)
		}
	})
}

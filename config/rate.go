package config

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
)

// Bounds of a Rate: past a million a second a per-client limit limits nothing.
const (
	maxRatePerSecond = 1e6
	maxRateBurst     = 1_000_000
)

var rateRE = regexp.MustCompile(`^\s*([0-9]+(?:\.[0-9]+)?)\s*/\s*(s|m|h)(?:\s+burst\s+([0-9]+))?\s*$`)

// ParseRate parses "20/s", "600/m", "100/h", optionally followed by an explicit bucket size:
// "20/s burst 40". Without one the burst is one second's worth rounded up (at least 1): "20/s"
// allows 20 at once then 20 a second, "600/m" 10 at once then 10 a second. Burst is always set
// in the result.
func ParseRate(s string) (Rate, error) {
	m := rateRE.FindStringSubmatch(s)
	if m == nil {
		return Rate{}, fmt.Errorf("%q is not a rate: write a count per unit, such as \"20/s\", \"600/m\" or \"20/s burst 40\"", s)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil || n <= 0 {
		return Rate{}, fmt.Errorf("%q: the count must be more than 0 (leave the key out for no limit)", s)
	}
	per := map[string]float64{"s": 1, "m": 60, "h": 3600}[m[2]]
	r := Rate{PerSecond: n / per}
	if r.PerSecond > maxRatePerSecond {
		return Rate{}, fmt.Errorf("%q is more than %g a second", s, maxRatePerSecond)
	}
	r.Burst = max(1, int(math.Ceil(r.PerSecond)))
	if m[3] != "" {
		b, err := strconv.Atoi(m[3])
		if err != nil || b < 1 || b > maxRateBurst {
			return Rate{}, fmt.Errorf("%q: burst must be a whole number in 1..%d", s, maxRateBurst)
		}
		r.Burst = b
	}
	return r, nil
}

// String renders a rate in the form ParseRate reads (per second, explicit burst).
func (r Rate) String() string {
	if r.IsZero() {
		return ""
	}
	return fmt.Sprintf("%s/s burst %d", strconv.FormatFloat(r.PerSecond, 'f', -1, 64), r.Burst)
}

package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// DurationAttr evaluates an attribute that holds a duration: a whole number of seconds (90) or a
// duration string ("90s", "5m", "180d": see ParseDuration). Negative values are rejected. The
// error points at the value.
func DurationAttr(attr *hcl.Attribute) (time.Duration, hcl.Diagnostics) {
	v, diags := attr.Expr.Value(nil)
	if diags.HasErrors() {
		return 0, diags
	}
	bad := func(detail string) (time.Duration, hcl.Diagnostics) {
		return 0, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Invalid duration for %q", attr.Name),
			Detail:   detail,
			Subject:  attr.Expr.Range().Ptr(),
		}}
	}
	if v.IsNull() || !v.IsKnown() {
		return bad("A duration is required: a number of seconds or a string such as \"30s\" or \"5m\".")
	}
	switch v.Type() {
	case cty.Number:
		f, _ := v.AsBigFloat().Float64()
		if f < 0 || math.IsInf(f, 0) || f > float64(math.MaxInt64/int64(time.Second)) {
			return bad(fmt.Sprintf("%v seconds is out of range: it must be 0 or more.", f))
		}
		return time.Duration(f * float64(time.Second)), nil
	case cty.String:
		d, err := ParseDuration(v.AsString())
		if err != nil {
			return bad(fmt.Sprintf("%q is not a duration (%v). Use a number of seconds or a string such as \"30s\", \"5m\", \"1h\", \"180d\".", v.AsString(), err))
		}
		if d < 0 {
			return bad(fmt.Sprintf("%q is negative: it must be 0 or more.", v.AsString()))
		}
		return d, nil
	default:
		return bad(fmt.Sprintf("Got a %s; a duration is a number of seconds or a string such as \"30s\".", v.Type().FriendlyName()))
	}
}

// StringAttr evaluates an attribute that must be a string.
func StringAttr(attr *hcl.Attribute) (string, hcl.Diagnostics) {
	v, diags := attr.Expr.Value(nil)
	if diags.HasErrors() {
		return "", diags
	}
	if v.IsNull() || v.Type() != cty.String {
		return "", hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Invalid value for %q", attr.Name),
			Detail:   "A string is required.",
			Subject:  attr.Expr.Range().Ptr(),
		}}
	}
	return v.AsString(), nil
}

// BoolAttr evaluates a bool attribute (true or false, no strings).
func BoolAttr(attr *hcl.Attribute) (bool, hcl.Diagnostics) {
	v, diags := attr.Expr.Value(nil)
	if diags.HasErrors() {
		return false, diags
	}
	if v.IsNull() || v.Type() != cty.Bool {
		return false, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Invalid value for %q", attr.Name),
			Detail:   "true or false is required.",
			Subject:  attr.Expr.Range().Ptr(),
		}}
	}
	return v.True(), nil
}

// maxDays is the most days a time.Duration holds (about 292 years).
const maxDays = int64(math.MaxInt64 / int64(24*time.Hour))

// ParseDuration parses a Go duration string ("90s", "1h30m") that may start with a whole
// number of days ("180d", "1d12h"): HSTS max-ages and certificate lifetimes are counted in
// days, which time.ParseDuration does not know.
func ParseDuration(s string) (time.Duration, error) {
	digits := 0
	for digits < len(s) && s[digits] >= '0' && s[digits] <= '9' {
		digits++
	}
	if digits == 0 || digits == len(s) || s[digits] != 'd' {
		return time.ParseDuration(s)
	}
	days, err := strconv.ParseInt(s[:digits], 10, 64)
	if err != nil || days > maxDays {
		return 0, fmt.Errorf("%q: too many days (at most %d)", s, maxDays)
	}
	d := time.Duration(days) * 24 * time.Hour
	rest := s[digits+1:]
	if rest == "" {
		return d, nil
	}
	if strings.HasPrefix(rest, "-") || strings.HasPrefix(rest, "+") {
		return 0, fmt.Errorf("%q: a sign may only start a duration", s)
	}
	r, err := time.ParseDuration(rest)
	if err != nil {
		return 0, err
	}
	if r > math.MaxInt64-d {
		return 0, errors.New("duration " + strconv.Quote(s) + " out of range")
	}
	return d + r, nil
}

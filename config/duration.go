package config

import (
	"fmt"
	"math"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// DurationAttr evaluates an attribute that holds a duration: a whole number of seconds (90) or a
// Go duration string ("90s", "5m"). Negative values are rejected. The error points at the value.
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
		d, err := time.ParseDuration(v.AsString())
		if err != nil {
			return bad(fmt.Sprintf("%q is not a duration (%v). Use a number of seconds or a string such as \"30s\", \"5m\", \"1h\".", v.AsString(), err))
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

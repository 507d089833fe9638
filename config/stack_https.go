package config

import (
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// maxHSTS bounds hsts: browsers cap max-age themselves (Chrome at one year), and a typo of
// "1800d" for "180d" would pin HTTPS on a name for five years.
const maxHSTS = 2 * 365 * 24 * time.Hour

// decodeHTTPSKeys reads the HTTPS settings of an http service into svc.Policy:
// https_redirect (bool) and hsts (a duration, whole seconds, at most two years).
func decodeHTTPSKeys(svc *StackService, content *hcl.BodyContent) hcl.Diagnostics {
	var diags hcl.Diagnostics
	httpOnly := func(a *hcl.Attribute) bool {
		if svc.Protocol == ProtocolHTTP {
			return true
		}
		diags = append(diags, errAt(a.NameRange.Ptr(), "HTTP-only key",
			"%s applies to http services only; service %q is %s.", a.Name, svc.Name, svc.Protocol))
		return false
	}
	if a := content.Attributes["https_redirect"]; a != nil && httpOnly(a) {
		v, d := BoolAttr(a)
		diags = append(diags, d...)
		svc.Policy.HTTPSRedirect = v
	}
	if a := content.Attributes["hsts"]; a != nil && httpOnly(a) {
		t, d := DurationAttr(a)
		diags = append(diags, d...)
		switch {
		case d.HasErrors():
		case t%time.Second != 0 || t > maxHSTS:
			diags = append(diags, errAt(a.Expr.Range().Ptr(), "Invalid hsts",
				"hsts is a max-age in whole seconds of at most %s (two years), such as \"180d\"; %s is not.",
				fmt.Sprint(maxHSTS), t))
		default:
			svc.Policy.HSTS = t
		}
	}
	return diags
}

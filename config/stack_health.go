package config

import (
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// decodeCloseOnUnhealthy reads `close_on_unhealthy = true|false` into the policy.
func decodeCloseOnUnhealthy(content *hcl.BodyContent, svc *StackService) hcl.Diagnostics {
	a := content.Attributes["close_on_unhealthy"]
	if a == nil {
		return nil
	}
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		return diags
	}
	if v.IsNull() || v.Type() != cty.Bool {
		return hcl.Diagnostics{errAt(a.Expr.Range().Ptr(), "Invalid close_on_unhealthy",
			"close_on_unhealthy must be true or false.")}
	}
	svc.Policy.CloseOnUnhealthy = v.True()
	return nil
}

package config

import (
	"github.com/hashicorp/hcl/v2"
)

// decodeCloseOnUnhealthy reads `close_on_unhealthy = true|false` into the policy.
func decodeCloseOnUnhealthy(content *hcl.BodyContent, svc *StackService) hcl.Diagnostics {
	a := content.Attributes["close_on_unhealthy"]
	if a == nil {
		return nil
	}
	v, diags := BoolAttr(a)
	svc.Policy.CloseOnUnhealthy = v
	return diags
}

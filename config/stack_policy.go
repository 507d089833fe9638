package config

import (
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// Client policy keys of a service block (issue 20): who may connect and how much.
var clientPolicyAttrs = []hcl.AttributeSchema{
	{Name: "allow"}, {Name: "deny"}, {Name: "max_connections_per_client"},
	{Name: "new_connections_per_client"}, {Name: "max_sessions"},
}

// maxPolicyCount bounds max_connections_per_client and max_sessions: more than any proxy holds.
const maxPolicyCount = 10_000_000

// decodeClientPolicy reads allow, deny and the limits into svc.Policy. They only mean something
// on a service the proxies reach (one with a timeout).
func decodeClientPolicy(content *hcl.BodyContent, svc *StackService) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, s := range clientPolicyAttrs {
		a := content.Attributes[s.Name]
		if a == nil {
			continue
		}
		if !svc.EntryPoint {
			diags = append(diags, errAt(a.NameRange.Ptr(), "Unexpected "+a.Name,
				"%s only applies to a service the proxies reach: service %q has no timeout, so it is a backend only.", a.Name, svc.Name))
			continue
		}
		var d hcl.Diagnostics
		switch a.Name {
		case "allow":
			svc.Policy.Allow, d = clientListAttr(a)
		case "deny":
			svc.Policy.Deny, d = clientListAttr(a)
		case "max_connections_per_client":
			svc.Policy.MaxConnectionsPerClient, d = countAttr(a)
		case "max_sessions":
			svc.Policy.MaxSessions, d = countAttr(a)
		case "new_connections_per_client":
			var s string
			if s, d = StringAttr(a); !d.HasErrors() {
				r, err := ParseRate(s)
				if err != nil {
					d = hcl.Diagnostics{errAt(a.Expr.Range().Ptr(), "Invalid new_connections_per_client", "%s.", err)}
				}
				svc.Policy.NewConnectionsPerClient = r
			}
		}
		diags = append(diags, d...)
	}
	return diags
}

// clientListAttr evaluates a list of CIDRs or addresses into canonical CIDRs; each error points
// at its element.
func clientListAttr(a *hcl.Attribute) ([]string, hcl.Diagnostics) {
	elems, diags := hcl.ExprList(a.Expr)
	if diags.HasErrors() {
		return nil, hcl.Diagnostics{errAt(a.Expr.Range().Ptr(), "Invalid "+a.Name,
			"%s must be a list of CIDRs or addresses, such as [\"203.0.113.0/24\", \"2001:db8::/32\"].", a.Name)}
	}
	if len(elems) > MaxPrefixListEntries {
		return nil, hcl.Diagnostics{errAt(a.Expr.Range().Ptr(), "Too many entries in "+a.Name,
			"%s has %d entries; at most %d are allowed (merge neighbouring ranges into wider CIDRs).", a.Name, len(elems), MaxPrefixListEntries)}
	}
	out := make([]string, 0, len(elems))
	seen := make(map[string]bool, len(elems))
	for _, e := range elems {
		v, d := e.Value(nil)
		if d.HasErrors() {
			diags = append(diags, d...)
			continue
		}
		if v.IsNull() || v.Type() != cty.String {
			diags = append(diags, errAt(e.Range().Ptr(), "Invalid "+a.Name+" entry", "Each entry must be a string: a CIDR or an address."))
			continue
		}
		p, err := ParsePrefix(v.AsString())
		if err != nil {
			diags = append(diags, errAt(e.Range().Ptr(), "Invalid "+a.Name+" entry", "%s.", err))
			continue
		}
		if s := p.String(); !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out, diags
}

// countAttr evaluates a whole number in 1..maxPolicyCount.
func countAttr(a *hcl.Attribute) (int, hcl.Diagnostics) {
	return wholeAttr(a, maxPolicyCount, " (leave it out for no limit)")
}

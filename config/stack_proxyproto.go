package config

import "github.com/hashicorp/hcl/v2"

// decodeSendProxyProtocol reads `send_proxy_protocol = "v1" | "v2"` into svc.Policy once the
// protocol is known: tcp and tls passthrough services take either version, udp only "v2" (v1
// has no datagram form), http none (the router sends X-Forwarded-For instead).
func decodeSendProxyProtocol(svc *StackService, a *hcl.Attribute) hcl.Diagnostics {
	if a == nil {
		return nil
	}
	v, diags := StringAttr(a)
	if diags.HasErrors() {
		return diags
	}
	switch {
	case v != "v1" && v != "v2":
		return hcl.Diagnostics{errAt(a.Expr.Range().Ptr(), "Invalid send_proxy_protocol",
			"send_proxy_protocol must be \"v1\" or \"v2\", not %q.", v)}
	case svc.Protocol == ProtocolHTTP:
		return hcl.Diagnostics{errAt(a.NameRange.Ptr(), "Unexpected send_proxy_protocol",
			"http service %q gets the client's address in X-Forwarded-For; send_proxy_protocol is for tcp, udp and tls services.", svc.Name)}
	case svc.Protocol == ProtocolUDP && v == "v1":
		return hcl.Diagnostics{errAt(a.Expr.Range().Ptr(), "Invalid send_proxy_protocol",
			"udp service %q can only send \"v2\": PROXY protocol v1 has no datagram form.", svc.Name)}
	}
	svc.Policy.SendProxyProtocol = v
	return nil
}

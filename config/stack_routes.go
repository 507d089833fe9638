package config

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// Path routes: `route "/api/" { service = "api.example.com" strip_prefix = true }` inside an
// http service. A request whose path starts with the prefix goes to the target service instead
// (longest prefix wins; no match: the service itself). The target is reached as every http
// service is, through the proxy's Proxy call, so it must be an http entry point (an http
// service with a timeout) declared somewhere in the stack set. Routes do not chain: the
// target's own routes are not consulted for a routed request.

// MaxRoutesPerService bounds the route blocks of one service: the proxy scans them per request
// and the table travels in every port table.
const MaxRoutesPerService = 1000

// maxRoutePrefix bounds a prefix's length (request targets over 8 KiB are refused anyway).
const maxRoutePrefix = 1024

var routeSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "service", Required: true}, {Name: "strip_prefix"}}}

// routeRange is where a route was declared, for diagnostics that need the whole stack set.
type routeRange struct {
	decl    hcl.Range // the block header
	service hcl.Range // the service attribute's value
}

// decodeRoutes decodes a service's route blocks into svc.Policy.Routes.
func decodeRoutes(svc *StackService, blocks hcl.Blocks) hcl.Diagnostics {
	var diags hcl.Diagnostics
	seen := map[string]hcl.Range{}
	for _, b := range blocks {
		if b.Type != "route" {
			continue
		}
		if svc.Protocol != ProtocolHTTP {
			diags = append(diags, errAt(b.DefRange.Ptr(), "Unexpected route",
				"route blocks are for http services; %s service %q is relayed as a byte stream without paths.", svc.Protocol, svc.Name))
			continue
		}
		if !svc.EntryPoint {
			diags = append(diags, errAt(b.DefRange.Ptr(), "Route on a backend-only service",
				"service %q has no timeout, so the proxies never route to it and its routes would never apply; give it a timeout.", svc.Name))
			break
		}
		if len(svc.Policy.Routes) == MaxRoutesPerService {
			diags = append(diags, errAt(b.DefRange.Ptr(), "Too many routes",
				"service %q has more than %d route blocks.", svc.Name, MaxRoutesPerService))
			break
		}
		prefix, prefixRange := b.Labels[0], b.LabelRanges[0]
		if why := checkRoutePrefix(prefix); why != "" {
			diags = append(diags, errAt(prefixRange.Ptr(), "Invalid route prefix", "%q %s.", prefix, why))
			continue
		}
		if first, dup := seen[prefix]; dup {
			diags = append(diags, errAt(prefixRange.Ptr(), "Duplicate route",
				"service %q already has a route for %q at %s.", svc.Name, prefix, pos(first)))
			continue
		}
		seen[prefix] = prefixRange
		content, d := b.Body.Content(routeSchema)
		diags = append(diags, d...)
		r := HTTPRoute{PathPrefix: prefix}
		rr := routeRange{decl: b.DefRange, service: b.DefRange}
		if a := content.Attributes["service"]; a != nil {
			name, d := StringAttr(a)
			diags = append(diags, d...)
			if d.HasErrors() {
				continue
			}
			if !ValidServiceName(name) {
				diags = append(diags, errAt(a.Expr.Range().Ptr(), "Invalid route service",
					"%q is not a service name.", name))
				continue
			}
			r.Service, rr.service = name, a.Expr.Range()
		} else {
			continue // hcl reported the missing attribute
		}
		if a := content.Attributes["strip_prefix"]; a != nil {
			v, d := a.Expr.Value(nil)
			if d.HasErrors() {
				diags = append(diags, d...)
				continue
			}
			if v.IsNull() || v.Type() != cty.Bool {
				diags = append(diags, errAt(a.Expr.Range().Ptr(), "Invalid strip_prefix", "strip_prefix must be true or false."))
				continue
			}
			r.StripPrefix = v.True()
		}
		svc.Policy.Routes = append(svc.Policy.Routes, r)
		svc.routeRanges = append(svc.routeRanges, rr)
	}
	return diags
}

// checkRoutePrefix returns why a route prefix is invalid, "" when it is valid: an absolute
// path of RFC 3986 path characters, as it appears decoded in a request (the proxy matches the
// decoded path, so an escape such as %20 in a prefix could never match).
func checkRoutePrefix(p string) string {
	switch {
	case !strings.HasPrefix(p, "/"):
		return "must start with \"/\""
	case len(p) > maxRoutePrefix:
		return fmt.Sprintf("is longer than %d bytes", maxRoutePrefix)
	}
	for _, c := range []byte(p) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("/-._~!$&'()*+,;=:@", c) >= 0:
		case c == '%':
			return "holds \"%\": prefixes match the decoded path, so write characters unescaped"
		default:
			return fmt.Sprintf("holds %q, which is not a path character (no query, fragment, space or control characters)", rune(c))
		}
	}
	return ""
}

// validateRoutes checks every route's target against the whole stack set: it must be an http
// service with a timeout (an entry point), since the proxy reaches it like any other.
func validateRoutes(stacks []Stack) hcl.Diagnostics {
	byName := map[string]StackService{}
	for _, st := range stacks {
		for _, svc := range st.Services {
			if _, dup := byName[svc.Name]; !dup {
				byName[svc.Name] = svc
			}
		}
	}
	var diags hcl.Diagnostics
	for _, st := range stacks {
		for _, svc := range st.Services {
			for i, r := range svc.Policy.Routes {
				if i >= len(svc.routeRanges) {
					break // built in Go, not decoded: nothing to point at
				}
				at := svc.routeRanges[i].service.Ptr()
				target, ok := byName[r.Service]
				switch {
				case !ok:
					diags = append(diags, errAt(at, "Unknown route service",
						"route %q of service %q names %q, which no stack declares.", r.PathPrefix, svc.Name, r.Service))
				case target.Protocol != ProtocolHTTP:
					diags = append(diags, errAt(at, "Invalid route service",
						"route %q of service %q names %s service %q; a route's target must be an http service.",
						r.PathPrefix, svc.Name, target.Protocol, r.Service))
				case !target.EntryPoint:
					diags = append(diags, errAt(at, "Unreachable route service",
						"route %q of service %q names %q, which has no timeout: only entry points (http services with a timeout) are reachable from the proxies. Add a timeout to %q (declared at %s).",
						r.PathPrefix, svc.Name, r.Service, r.Service, pos(target.DeclRange)))
				}
			}
		}
	}
	return diags
}

package proxy

import (
	"context"
	"net/http"
	"net/http/httputil"

	"github.com/nullnet/nullnet/agent/proxy/pathroute"
	"github.com/nullnet/nullnet/agent/servicepolicy"
)

// routeTables maps an http service to its compiled path routes (only services with routes).
// It is built once per port table and read by every request without a lock.
type routeTables map[string]*pathroute.Table

// compileRoutes builds the tables from a bundle's index: routes are the only part of an http
// service's policy the router needs per request.
func compileRoutes(ix *servicepolicy.Index) routeTables {
	tabs := routeTables{}
	for name, sp := range ix.All() {
		rs := sp.GetRoutes()
		if len(rs) == 0 {
			continue
		}
		if _, ok := ix.HTTPService(name); !ok {
			continue
		}
		routes := make([]pathroute.Route, 0, len(rs))
		for _, r := range rs {
			routes = append(routes, pathroute.Route{Prefix: r.GetPathPrefix(), Service: r.GetService(), StripPrefix: r.GetStripPrefix()})
		}
		tabs[name] = pathroute.Compile(routes)
	}
	return tabs
}

// setRoutes installs the routes of a pushed port table.
func (r *httpRouter) setRoutes(ix *servicepolicy.Index) {
	tabs := compileRoutes(ix)
	r.routes.Store(&tabs)
}

// routedKey carries the target service of a routed request to upstreamFailed.
type routedKey struct{}

// routedService is the service a request was sent to: a route's target, else the Host's.
func routedService(req *http.Request) string {
	if s, ok := req.Context().Value(routedKey{}).(string); ok {
		return s
	}
	return serviceFromHost(req.Host)
}

// routeKey carries the stripped prefix of a routed request to Rewrite (X-Forwarded-Prefix).
type routeKey struct{}

// route picks the service that serves req: the target of the longest route of service whose
// prefix starts the path, or service itself. A route with strip_prefix returns a request
// whose path has lost the prefix (the query is untouched); the original req is not modified.
func (r *httpRouter) route(service string, req *http.Request) (string, *http.Request) {
	tabs := r.routes.Load()
	if tabs == nil {
		return service, req
	}
	rt, ok := (*tabs)[service].Match(req.URL.Path)
	if !ok {
		return service, req
	}
	if !rt.StripPrefix {
		return rt.Service, req
	}
	u := *req.URL
	u.Path, u.RawPath = pathroute.Strip(rt.Prefix, u.Path, u.RawPath)
	out := req.WithContext(context.WithValue(req.Context(), routeKey{}, rt.Prefix))
	out.URL = &u
	return rt.Service, out
}

// setRouteHeaders tells the upstream of a stripped route which prefix was removed, as
// Traefik's StripPrefix does, so that it can build links under it. Called from Rewrite after
// the client's forwarding headers were dropped, so a client cannot set it.
func setRouteHeaders(pr *httputil.ProxyRequest) {
	if p, ok := pr.In.Context().Value(routeKey{}).(string); ok {
		pr.Out.Header.Set("X-Forwarded-Prefix", p)
	}
}

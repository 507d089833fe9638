package proxy

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/nullnet/nullnet/agent/servicepolicy"
	pb "github.com/nullnet/nullnet/proto"
)

// BenchmarkHTTPRoute100 is the router's per-request cost of path routing for a service with
// 100 routes: the table lookup, the match and, for strip_prefix, the request copy.
func BenchmarkHTTPRoute100(b *testing.B) {
	var routes []*pb.HTTPRoute
	for i := range 100 {
		routes = append(routes, &pb.HTTPRoute{PathPrefix: fmt.Sprintf("/team%02d/svc%d/", i, i%7),
			Service: fmt.Sprintf("s%d.example.com", i), StripPrefix: i%2 == 0})
	}
	r := &httpRouter{}
	r.setRoutes(servicepolicy.NewIndex(routesBundle(1, "www.example.com", routes...)))
	for _, bc := range []struct{ name, target string }{
		{"strip", "/team42/svc0/users/7?x=1"},
		{"keep", "/team43/svc1/users/7?x=1"},
		{"nomatch", "/static/app.js"},
		{"noroutes", "/"},
	} {
		host := "www.example.com"
		if bc.name == "noroutes" {
			host = "other.example.com"
		}
		req := httptest.NewRequest("GET", bc.target, nil)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if svc, _ := r.route(host, req); svc == "" {
					b.Fatal("no service")
				}
			}
		})
	}
}

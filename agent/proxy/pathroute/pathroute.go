// Package pathroute matches an HTTP request path against a service's path-prefix routes
// (`route "/api/" { service = "..." }` in a stack file): the longest matching prefix wins, and
// a route may strip its prefix from the path the upstream sees.
//
// A Table is compiled once per port table (the proxy's http_services) and then shared,
// read-only, by every request.
package pathroute

import (
	"sort"
	"strings"
)

// Route is one path-prefix route.
type Route struct {
	Prefix      string
	Service     string
	StripPrefix bool
}

// Table is a compiled, immutable set of routes. The zero value and nil match nothing.
type Table struct {
	// groups hold the routes by prefix length, longest first: the first group with a match
	// holds the longest matching prefix. Within a group there is at most one match (equal
	// lengths, distinct prefixes), found by comparing path[:n] with each prefix, or through a
	// map in a large group, so a request costs one comparison or lookup per distinct length.
	groups []group
	n      int
}

type group struct {
	n      int
	routes []Route          // sorted lexically
	index  map[string]Route // set when len(routes) > groupScanMax
}

// groupScanMax is the group size past which a map lookup beats comparing strings one by one.
const groupScanMax = 4

// Compile builds a table. Routes whose prefix does not start with "/" are dropped (the stack
// validation refuses them; a table from a newer server must still not misroute), and of two
// routes with one prefix the first is kept.
func Compile(routes []Route) *Table {
	var kept []Route
	seen := make(map[string]bool, len(routes))
	for _, r := range routes {
		if !strings.HasPrefix(r.Prefix, "/") || seen[r.Prefix] {
			continue
		}
		seen[r.Prefix] = true
		kept = append(kept, r)
	}
	sort.Slice(kept, func(i, j int) bool {
		a, b := kept[i].Prefix, kept[j].Prefix
		if len(a) != len(b) {
			return len(a) > len(b)
		}
		return a < b
	})
	t := &Table{n: len(kept)}
	for i := 0; i < len(kept); {
		j := i
		for j < len(kept) && len(kept[j].Prefix) == len(kept[i].Prefix) {
			j++
		}
		g := group{n: len(kept[i].Prefix), routes: kept[i:j:j]}
		if len(g.routes) > groupScanMax {
			g.index = make(map[string]Route, len(g.routes))
			for _, r := range g.routes {
				g.index[r.Prefix] = r
			}
		}
		t.groups = append(t.groups, g)
		i = j
	}
	return t
}

// Len is the number of routes.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return t.n
}

// Match returns the route whose prefix is the longest prefix of path, if any. Matching is a
// plain string prefix, as Traefik's PathPrefix and nginx's prefix locations: "/api" matches
// "/api", "/api/v1" and "/apis"; write "/api/" to match only below the directory.
func (t *Table) Match(path string) (Route, bool) {
	if t == nil {
		return Route{}, false
	}
	for i := range t.groups {
		g := &t.groups[i]
		if len(path) < g.n {
			continue
		}
		head := path[:g.n]
		if g.index != nil {
			if r, ok := g.index[head]; ok {
				return r, true
			}
			continue
		}
		for _, r := range g.routes {
			if r.Prefix == head {
				return r, true
			}
		}
	}
	return Route{}, false
}

// Strip removes prefix from a request path and its escaped form (rawPath, "" when the path
// needs no escaping), keeping a leading "/": "/api/" stripped from "/api/users" leaves
// "/users", and from "/api/" leaves "/". When rawPath does not start with prefix (the prefix
// itself was sent escaped), the returned rawPath is "" and the upstream sees the path
// re-escaped from its decoded form.
func Strip(prefix, path, rawPath string) (string, string) {
	path = withSlash(strings.TrimPrefix(path, prefix))
	if rawPath != "" {
		if strings.HasPrefix(rawPath, prefix) {
			rawPath = withSlash(strings.TrimPrefix(rawPath, prefix))
		} else {
			rawPath = ""
		}
	}
	return path, rawPath
}

func withSlash(p string) string {
	if strings.HasPrefix(p, "/") {
		return p
	}
	return "/" + p
}

package pathroute

import (
	"fmt"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	tab := Compile([]Route{
		{Prefix: "/api/", Service: "api"},
		{Prefix: "/api/v2/", Service: "api-v2", StripPrefix: true},
		{Prefix: "/static", Service: "cdn"},
		{Prefix: "/api/", Service: "second-ignored"},
		{Prefix: "nope", Service: "dropped"},
	})
	if tab.Len() != 3 {
		t.Fatalf("Len = %d, want 3", tab.Len())
	}
	for _, tc := range []struct {
		path, want string
	}{
		{"/api/users", "api"},
		{"/api/", "api"},
		{"/api", ""}, // "/api/" needs the slash
		{"/api/v2/x", "api-v2"},
		{"/api/v2", "api"}, // shorter than "/api/v2/": falls to "/api/"
		{"/static", "cdn"},
		{"/statics/a.css", "cdn"}, // plain string prefix
		{"/", ""},
		{"", ""},
		{"nope/x", ""},
	} {
		r, ok := tab.Match(tc.path)
		if got := r.Service; got != tc.want || ok != (tc.want != "") {
			t.Errorf("Match(%q) = %q, %v; want %q", tc.path, got, ok, tc.want)
		}
	}
	var nilTab *Table
	if _, ok := nilTab.Match("/x"); ok || nilTab.Len() != 0 {
		t.Error("nil table matched")
	}
}

func TestStrip(t *testing.T) {
	for _, tc := range []struct {
		prefix, path, raw, wantPath, wantRaw string
	}{
		{"/api/", "/api/users", "", "/users", ""},
		{"/api/", "/api/", "", "/", ""},
		{"/api", "/api", "", "/", ""},
		{"/api", "/api/users", "", "/users", ""},
		{"/api", "/apis", "", "/s", ""},
		{"/api/", "/api/a b", "/api/a%20b", "/a b", "/a%20b"},
		{"/a b/", "/a b/x", "/a%20b/x", "/x", ""}, // escaped prefix: re-escape from Path
	} {
		p, r := Strip(tc.prefix, tc.path, tc.raw)
		if p != tc.wantPath || r != tc.wantRaw {
			t.Errorf("Strip(%q, %q, %q) = %q, %q; want %q, %q", tc.prefix, tc.path, tc.raw, p, r, tc.wantPath, tc.wantRaw)
		}
	}
}

// BenchmarkMatch100 is the per-request cost of matching against a service with 100 routes:
// a path that matches the longest route, one that matches a short one, and one that matches
// none (the whole table is scanned).
func BenchmarkMatch100(b *testing.B) {
	var routes []Route
	for i := range 100 {
		routes = append(routes, Route{Prefix: fmt.Sprintf("/svc%02d/v%d/", i, i%3), Service: fmt.Sprintf("s%d", i)})
	}
	routes = append(routes[:99], Route{Prefix: "/", Service: "root"})
	tab := Compile(routes)
	for _, bc := range []struct{ name, path string }{
		{"longest", "/svc00/v0/users/42?x=1"},
		{"shortest", "/other/page"},
		{"scan", "/svc42/v9/none"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, ok := tab.Match(bc.path); !ok {
					b.Fatal("no match")
				}
			}
		})
	}
}

// BenchmarkMatch100Lengths: 100 routes of 100 distinct lengths, the worst case of the
// grouping (one comparison per length).
func BenchmarkMatch100Lengths(b *testing.B) {
	var routes []Route
	for i := range 100 {
		routes = append(routes, Route{Prefix: "/" + strings.Repeat("a", i+1), Service: fmt.Sprintf("s%d", i)})
	}
	tab := Compile(routes)
	for b.Loop() {
		if _, ok := tab.Match("/b/not/matched"); ok {
			b.Fatal("matched")
		}
	}
}

// FuzzMatchStrip: any remote path matches without panicking, and a stripped path keeps its
// leading slash.
func FuzzMatchStrip(f *testing.F) {
	tab := Compile([]Route{{Prefix: "/api/", StripPrefix: true}, {Prefix: "/a"}, {Prefix: "/"}})
	f.Add("/api/x", "/api/x")
	f.Add("", "")
	f.Add("/a%2Fb", "/a%2Fb")
	f.Fuzz(func(t *testing.T, path, raw string) {
		r, ok := tab.Match(path)
		if !ok {
			if strings.HasPrefix(path, "/") {
				t.Fatalf("%q: no match despite the \"/\" route", path)
			}
			return
		}
		if !strings.HasPrefix(path, r.Prefix) {
			t.Fatalf("%q matched %q", path, r.Prefix)
		}
		p, rp := Strip(r.Prefix, path, raw)
		if !strings.HasPrefix(p, "/") || (rp != "" && !strings.HasPrefix(rp, "/")) {
			t.Fatalf("Strip(%q, %q, %q) = %q, %q", r.Prefix, path, raw, p, rp)
		}
	})
}

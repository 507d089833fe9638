package site

import (
	"bytes"
	"fmt"
	"html/template"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// NavSection is one group of the sidebar: a directory of the site.
type NavSection struct {
	Title string
	Pages []*Page
}

// sectionTitles names the sidebar groups, in order; directories not listed come after them.
var sectionTitles = []struct{ dir, title string }{
	{"", "nullnet"},
	{"docs", "Documentation"},
	{"docs/cli", "CLI"},
	{"docs/api", "HTTP API"},
	{"docs/operations", "Operations"},
}

// pageOrder puts pages in reading order inside their group; pages not listed follow,
// alphabetically by title, so a page added by anyone shows up without touching the renderer.
var pageOrder = []string{
	"README.md",
	"docs/architecture.md", "docs/getting-started.md", "docs/agent-config.md", "docs/stacks.md",
	"docs/client.md", "docs/containers.md", "docs/proxy.md", "docs/https.md", "docs/overlay.md", "docs/kernel-path.md", "docs/sessions.md", "docs/ha.md", "docs/events.md",
	"docs/metrics.md", "docs/grpc.md", "docs/tls.md", "docs/testing.md", "docs/performance.md",
	"docs/cli/index.md", "docs/cli/agent.md", "docs/cli/validate.md", "docs/cli/version.md",
	"docs/cli/stacks.md", "docs/cli/port-mappings.md", "docs/cli/sessions.md", "docs/cli/events.md", "docs/cli/servers.md",
	"docs/cli/tls.md",
	"docs/api/index.md", "docs/api/agent.md", "docs/api/stacks.md", "docs/api/events.md",
	"docs/api/sessions.md", "docs/api/servers.md", "docs/api/proxy.md",
	"docs/operations/consul.md", "docs/operations/nomad.md", "docs/operations/systemd.md",
	"docs/operations/security.md", "docs/operations/upgrades.md", "docs/operations/troubleshooting.md",
}

// Nav groups every page by directory, in reading order.
func (s *Site) Nav() []NavSection {
	rank := map[string]int{}
	for i, p := range pageOrder {
		rank[p] = i
	}
	groups := map[string][]*Page{}
	for _, p := range s.Pages {
		dir := path.Dir(p.Src)
		if dir == "." {
			dir = ""
		}
		groups[dir] = append(groups[dir], p)
	}
	var out []NavSection
	seen := map[string]bool{}
	add := func(dir, title string) {
		pages := groups[dir]
		if len(pages) == 0 || seen[dir] {
			return
		}
		seen[dir] = true
		sort.Slice(pages, func(i, j int) bool {
			ri, iok := rank[pages[i].Src]
			rj, jok := rank[pages[j].Src]
			switch {
			case iok && jok:
				return ri < rj
			case iok != jok:
				return iok
			default:
				return pages[i].Title < pages[j].Title
			}
		})
		out = append(out, NavSection{Title: title, Pages: pages})
	}
	for _, st := range sectionTitles {
		add(st.dir, st.title)
	}
	var rest []string
	for dir := range groups {
		rest = append(rest, dir)
	}
	sort.Strings(rest)
	for _, dir := range rest {
		add(dir, titleCase(path.Base(dir)))
	}
	return out
}

type navLink struct {
	Title   string
	Href    string
	Current bool
}

type navGroup struct {
	Title string
	Links []navLink
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · nullnet</title>
<style>
body{margin:0;font:16px/1.55 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1f2328;display:flex}
nav{width:17rem;flex:none;background:#f6f8fa;border-right:1px solid #d0d7de;padding:1rem 1.2rem;min-height:100vh;box-sizing:border-box}
nav h2{font-size:.8rem;text-transform:uppercase;letter-spacing:.05em;color:#57606a;margin:1.2rem 0 .3rem}
nav ul{list-style:none;margin:0;padding:0}
nav li a{display:block;padding:.15rem 0;color:#0969da;text-decoration:none}
nav li a.current{font-weight:600;color:#1f2328}
main{flex:1;max-width:56rem;padding:1.5rem 2.5rem}
pre{background:#f6f8fa;padding:.8rem;overflow:auto;border-radius:6px;line-height:1.35}
code{font:.9em ui-monospace,SFMono-Regular,Menlo,monospace}
table{border-collapse:collapse;margin:1rem 0}
td,th{border:1px solid #d0d7de;padding:.3rem .6rem;vertical-align:top}
th{background:#f6f8fa}
a{color:#0969da}
</style>
</head>
<body>
<nav>
<a href="{{.Home}}"><strong>nullnet docs</strong></a>
{{range .Nav}}<h2>{{.Title}}</h2>
<ul>
{{range .Links}}<li><a href="{{.Href}}"{{if .Current}} class="current"{{end}}>{{.Title}}</a></li>
{{end}}</ul>
{{end}}</nav>
<main>
{{.Body}}
</main>
</body>
</html>
`))

// renderPage wraps a page's HTML body in the layout with the sidebar.
func renderPage(p *Page, nav []NavSection, body string) ([]byte, error) {
	rel := func(to string) string {
		r, err := filepath.Rel(path.Dir(p.Out()), to)
		if err != nil {
			return to
		}
		return filepath.ToSlash(r)
	}
	var groups []navGroup
	for _, sec := range nav {
		g := navGroup{Title: sec.Title}
		for _, q := range sec.Pages {
			g.Links = append(g.Links, navLink{Title: q.Title, Href: rel(q.Out()), Current: q == p})
		}
		groups = append(groups, g)
	}
	var b bytes.Buffer
	err := pageTmpl.Execute(&b, map[string]any{
		"Title": p.Title,
		"Home":  rel("index.html"),
		"Nav":   groups,
		// The body is goldmark's output for our own Markdown.
		"Body": template.HTML(body), //nolint:gosec
	})
	if err != nil {
		return nil, fmt.Errorf("layout for %s: %w", p.Src, err)
	}
	return b.Bytes(), nil
}

// titleCase is used for directory groups without a configured title.
func titleCase(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

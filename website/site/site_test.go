package site

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSiteLinks is the docs link check: every internal link and #anchor of every page resolves,
// the site renders, and every relative href in the written HTML points at a written file.
func TestSiteLinks(t *testing.T) {
	site, err := Load("..")
	if err != nil {
		t.Fatal(err)
	}
	if len(site.Pages) == 0 {
		t.Fatal("no pages under website/")
	}
	for _, e := range site.Check() {
		t.Errorf("broken link: %s", e)
	}
	if t.Failed() {
		return
	}
	out := t.TempDir()
	if err := site.Render(out); err != nil {
		t.Fatalf("render: %v", err)
	}
	checkWrittenHrefs(t, out)
}

var hrefRE = regexp.MustCompile(`(?:href|src)="([^"]*)"`)

// checkWrittenHrefs walks the output and resolves every relative href/src against the files
// written, so that a rewriting bug cannot hide behind a correct Markdown-level check.
func checkWrittenHrefs(t *testing.T, out string) {
	t.Helper()
	err := filepath.Walk(out, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !strings.HasSuffix(p, ".html") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range hrefRE.FindAllStringSubmatch(string(b), -1) {
			h := m[1]
			if h == "" || strings.Contains(h, ":") || strings.HasPrefix(h, "#") || strings.HasPrefix(h, "//") {
				continue
			}
			h, _, _ = strings.Cut(h, "#")
			target := filepath.Join(filepath.Dir(p), filepath.FromSlash(h))
			if st, err := os.Stat(target); err != nil {
				t.Errorf("%s: href %q: no such file in the rendered site", mustRel(out, p), m[1])
			} else if st.IsDir() {
				if _, err := os.Stat(filepath.Join(target, "index.html")); err != nil {
					t.Errorf("%s: href %q: directory without index.html", mustRel(out, p), m[1])
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestResolve covers the link rules on a small site built for the test.
func TestResolve(t *testing.T) {
	repo := t.TempDir()
	write := func(rel, content string) {
		p := filepath.Join(repo, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("website/README.md", "# Home\n\n## Getting started\n")
	write("website/docs/a.md", "# Page A\n\n## The `server` block\n\n### Same\n\n### Same\n")
	write("website/docs/cli/README.md", "# CLI\n")
	write("website/docs/img.svg", "<svg/>")
	write("scripts/nomad/job.hcl", "job {}")
	site, err := Load(filepath.Join(repo, "website"))
	if err != nil {
		t.Fatal(err)
	}
	from := site.Pages["docs/a.md"]
	cases := []struct {
		dest, href, err string
	}{
		{dest: "https://example.com/x.md", href: "https://example.com/x.md"},
		{dest: "#the-server-block", href: "#the-server-block"},
		{dest: "#same-1", href: "#same-1"},
		{dest: "#nope", err: "no heading with anchor #nope"},
		{dest: "../README.md#getting-started", href: "../index.html#getting-started"},
		{dest: "../README.md#started", err: "no heading with anchor #started"},
		{dest: "cli/README.md", href: "cli/index.html"},
		{dest: "cli/", href: "cli/index.html"},
		{dest: "a.md", href: "a.html"},
		{dest: "missing.md", err: "no page website/docs/missing.md"},
		{dest: "img.svg", href: "img.svg"},
		{dest: "../../scripts/nomad/job.hcl", href: "../repo/scripts/nomad/job.hcl"},
		{dest: "../../scripts/nomad/gone.hcl", err: "no file scripts/nomad/gone.hcl"},
		{dest: "../../../etc/passwd", err: "leaves the repository"},
		{dest: "/docs/a.md", err: "absolute path"},
	}
	for _, c := range cases {
		t.Run(c.dest, func(t *testing.T) {
			tg, err := site.resolve(from, c.dest)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tg.href(from); got != c.href {
				t.Fatalf("href = %q, want %q", got, c.href)
			}
		})
	}
	if got := site.Pages["docs/a.md"].Title; got != "Page A" {
		t.Errorf("title = %q", got)
	}
}

// Package site loads the Markdown documentation under website/, checks its internal links and
// anchors, and renders it to static HTML with a sidebar nav (goldmark, GitHub-flavoured).
package site

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/parser"
	"github.com/yuin/goldmark/renderer/html"
	"github.com/yuin/goldmark/text"
)

// Page is one Markdown file of the site, parsed once. Src is its slash-separated path relative
// to the site root ("docs/cli/agent.md").
type Page struct {
	Src    string
	Title  string
	Source []byte
	Doc    ast.Node
	// IDs are the anchors goldmark gives the page's headings: exactly what the HTML carries, so
	// a #fragment is checked against the real output.
	IDs map[string]bool
}

// Out is the page's output path relative to the output directory: README.md becomes
// index.html so that a directory's front page is what a web server serves for the directory.
func (p *Page) Out() string { return outPath(p.Src) }

func outPath(src string) string {
	dir, file := path.Split(src)
	if strings.EqualFold(file, "README.md") {
		return dir + "index.html"
	}
	return strings.TrimSuffix(src, ".md") + ".html"
}

// Site is every Markdown page and asset under the site root. Root is the website directory;
// Repo is the repository root, the only place links may point to outside the site.
type Site struct {
	Root   string
	Repo   string
	Pages  map[string]*Page
	Assets map[string]bool
	md     goldmark.Markdown
}

// skipDirs are directories under the site root that are not documentation: the renderer's own
// source, the site library and the output.
var skipDirs = map[string]bool{"render": true, "site": true, "public": true}

// Load reads and parses every .md file under root (the website directory). Other files that are
// not Go source become assets, copied as they are.
func Load(root string) (*Site, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("site root: %w", err)
	}
	s := &Site{
		Root:   abs,
		Repo:   filepath.Dir(abs),
		Pages:  map[string]*Page{},
		Assets: map[string]bool{},
		md: goldmark.New(
			goldmark.WithExtensions(extension.GFM),
			goldmark.WithParserOptions(parser.WithAutoHeadingID()),
			// The docs are ours; raw HTML (an inline SVG, a <details>) is rendered as written.
			goldmark.WithRendererOptions(html.WithUnsafe()),
		),
	}
	err = filepath.WalkDir(abs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := filepath.ToSlash(mustRel(abs, p))
		if d.IsDir() {
			if rel != "." && (skipDirs[rel] || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case strings.HasPrefix(d.Name(), "."), strings.HasSuffix(d.Name(), ".go"):
			return nil
		case strings.HasSuffix(d.Name(), ".md"):
			src, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("reading page: %w", err)
			}
			s.Pages[rel] = s.parse(rel, src)
		default:
			s.Assets[rel] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("loading site %s: %w", abs, err)
	}
	return s, nil
}

func mustRel(base, p string) string {
	rel, err := filepath.Rel(base, p)
	if err != nil {
		return p
	}
	return rel
}

// parse builds a page's AST (with heading IDs) and its title, the text of its first H1.
func (s *Site) parse(rel string, src []byte) *Page {
	doc := s.md.Parser().Parse(text.NewReader(src))
	p := &Page{Src: rel, Source: src, Doc: doc, IDs: map[string]bool{}}
	_ = ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		h, ok := n.(*ast.Heading)
		if !entering || !ok {
			return ast.WalkContinue, nil
		}
		if id, ok := h.AttributeString("id"); ok {
			if b, ok := id.([]byte); ok {
				p.IDs[string(b)] = true
			}
		}
		if h.Level == 1 && p.Title == "" {
			p.Title = InlineText(h, src)
		}
		return ast.WalkSkipChildren, nil
	})
	if p.Title == "" {
		p.Title = strings.TrimSuffix(path.Base(rel), ".md")
	}
	return p
}

// InlineText is the plain text of a node's inline children (code spans included).
func InlineText(n ast.Node, src []byte) string {
	var b strings.Builder
	_ = ast.Walk(n, func(c ast.Node, entering bool) (ast.WalkStatus, error) {
		if !entering {
			return ast.WalkContinue, nil
		}
		switch t := c.(type) {
		case *ast.Text:
			b.Write(t.Segment.Value(src))
			if t.SoftLineBreak() {
				b.WriteByte(' ')
			}
		case *ast.String:
			b.Write(t.Value)
		}
		return ast.WalkContinue, nil
	})
	return strings.TrimSpace(b.String())
}

// SortedPages returns the pages in path order.
func (s *Site) SortedPages() []*Page {
	out := make([]*Page, 0, len(s.Pages))
	for _, p := range s.Pages {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Src < out[j].Src })
	return out
}

// Render writes every page as HTML, with links rewritten and the nav, plus the assets and the
// repository files the pages link to, under out. Broken links are an error: the site is only
// written when every internal link resolves.
func (s *Site) Render(out string) error {
	if errs := s.Check(); len(errs) > 0 {
		var b strings.Builder
		for _, e := range errs {
			fmt.Fprintf(&b, "\n  %s", e)
		}
		return fmt.Errorf("%d broken links:%s", len(errs), b.String())
	}
	nav := s.Nav()
	repoFiles := map[string]bool{}
	for _, p := range s.SortedPages() {
		for _, l := range s.links(p) {
			t, _ := s.resolve(p, l.dest)
			if t.repoPath != "" {
				repoFiles[t.repoPath] = true
			}
			l.set(t.href(p))
		}
		var body bytes.Buffer
		if err := s.md.Renderer().Render(&body, p.Source, p.Doc); err != nil {
			return fmt.Errorf("rendering %s: %w", p.Src, err)
		}
		page, err := renderPage(p, nav, body.String())
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(out, filepath.FromSlash(p.Out())), page); err != nil {
			return err
		}
	}
	for a := range s.Assets {
		if err := copyFile(filepath.Join(s.Root, filepath.FromSlash(a)), filepath.Join(out, filepath.FromSlash(a))); err != nil {
			return err
		}
	}
	for rp := range repoFiles {
		if err := s.copyRepoPath(rp, out); err != nil {
			return err
		}
	}
	return nil
}

// copyRepoPath copies a linked repository file (or a directory's files, with a listing page)
// under out/repo/, so that the static site is self-contained.
func (s *Site) copyRepoPath(rp, out string) error {
	src := filepath.Join(s.Repo, filepath.FromSlash(rp))
	dst := filepath.Join(out, "repo", filepath.FromSlash(rp))
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("linked repository path: %w", err)
	}
	if !st.IsDir() {
		return copyFile(src, dst)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("linked repository directory: %w", err)
	}
	var list strings.Builder
	fmt.Fprintf(&list, "<!doctype html><meta charset=\"utf-8\"><title>%s</title><h1>%s/</h1><ul>\n", rp, rp)
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
		fmt.Fprintf(&list, "<li><a href=\"%s\">%s</a></li>\n", e.Name(), e.Name())
	}
	list.WriteString("</ul>\n")
	return writeFile(filepath.Join(dst, "index.html"), []byte(list.String()))
}

func writeFile(p string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("creating output directory: %w", err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("copying asset: %w", err)
	}
	return writeFile(dst, b)
}

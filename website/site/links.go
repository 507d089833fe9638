package site

import (
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/yuin/goldmark/ast"
)

// linkRef is one link or image destination in a page's AST, with a way to rewrite it.
type linkRef struct {
	dest string
	line int
	set  func(string)
}

// links returns every Markdown link and image of a page, in document order.
func (s *Site) links(p *Page) []linkRef {
	var out []linkRef
	_ = ast.Walk(p.Doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		if !entering {
			return ast.WalkContinue, nil
		}
		switch l := n.(type) {
		case *ast.Link:
			out = append(out, linkRef{dest: string(l.Destination), line: lineOf(n, p.Source),
				set: func(d string) { l.Destination = []byte(d) }})
		case *ast.Image:
			out = append(out, linkRef{dest: string(l.Destination), line: lineOf(n, p.Source),
				set: func(d string) { l.Destination = []byte(d) }})
		}
		return ast.WalkContinue, nil
	})
	return out
}

// lineOf finds the line of an inline node through the nearest block ancestor with lines.
func lineOf(n ast.Node, src []byte) int {
	for c := n; c != nil; c = c.Parent() {
		if c.Type() == ast.TypeBlock && c.Lines().Len() > 0 {
			return 1 + strings.Count(string(src[:c.Lines().At(0).Start]), "\n")
		}
	}
	return 0
}

// LinkError is a link that does not resolve.
type LinkError struct {
	Page string
	Line int
	Dest string
	Why  string
}

func (e LinkError) String() string {
	return fmt.Sprintf("website/%s:%d: link %q: %s", e.Page, e.Line, e.Dest, e.Why)
}

// Check resolves every internal link of every page: the target page or file must exist, and a
// #fragment must be a heading anchor of the target page. External links (with a scheme) are
// not fetched.
func (s *Site) Check() []LinkError {
	var errs []LinkError
	for _, p := range s.SortedPages() {
		for _, l := range s.links(p) {
			if _, err := s.resolve(p, l.dest); err != nil {
				errs = append(errs, LinkError{Page: p.Src, Line: l.line, Dest: l.dest, Why: err.Error()})
			}
		}
	}
	return errs
}

// target is where a link leads: an external URL, a page or asset of the site (sitePath, the
// output path), or a repository file outside the site (repoPath).
type target struct {
	external string
	sitePath string
	repoPath string
	fragment string
}

// href is the link as written into the page's HTML, relative to the page's output location.
func (t target) href(from *Page) string {
	if t.external != "" {
		return t.external
	}
	frag := ""
	if t.fragment != "" {
		frag = "#" + t.fragment
	}
	dest := t.sitePath
	if t.repoPath != "" {
		dest = "repo/" + t.repoPath
	}
	if dest == "" {
		return frag
	}
	rel, err := filepath.Rel(path.Dir(from.Out()), dest)
	if err != nil {
		return dest + frag
	}
	return filepath.ToSlash(rel) + frag
}

// resolve works out a link's target and whether it exists.
func (s *Site) resolve(from *Page, dest string) (target, error) {
	u, err := url.Parse(dest)
	if err != nil {
		return target{}, fmt.Errorf("not a URL: %v", err)
	}
	if u.Scheme != "" || u.Host != "" {
		return target{external: dest}, nil
	}
	frag := u.Fragment
	if u.Path == "" {
		if frag == "" {
			return target{}, fmt.Errorf("empty link")
		}
		if !from.IDs[frag] {
			return target{}, fmt.Errorf("no heading with anchor #%s in this page (anchors: %s)", frag, anchors(from))
		}
		return target{fragment: frag}, nil
	}
	if strings.HasPrefix(u.Path, "/") {
		return target{}, fmt.Errorf("absolute path; use a path relative to this page")
	}
	joined := path.Join(path.Dir(from.Src), u.Path)
	if strings.HasPrefix(joined, "../") || joined == ".." {
		return s.resolveRepo(joined, frag)
	}
	if strings.HasSuffix(joined, ".md") {
		p := s.Pages[joined]
		if p == nil {
			return target{}, fmt.Errorf("no page website/%s", joined)
		}
		if frag != "" && !p.IDs[frag] {
			return target{}, fmt.Errorf("no heading with anchor #%s in website/%s (anchors: %s)", frag, joined, anchors(p))
		}
		return target{sitePath: p.Out(), fragment: frag}, nil
	}
	if s.Assets[joined] {
		return target{sitePath: joined, fragment: frag}, nil
	}
	if p := s.Pages[path.Join(joined, "README.md")]; p != nil {
		return target{sitePath: p.Out(), fragment: frag}, nil
	}
	return target{}, fmt.Errorf("no page or file website/%s", joined)
}

// resolveRepo handles links that leave website/: they must stay inside the repository and name
// something that exists.
func (s *Site) resolveRepo(joined, frag string) (target, error) {
	// joined is relative to website/; from the repository root it loses one "../".
	rp := strings.TrimPrefix(joined, "../")
	if rp == ".." || strings.HasPrefix(rp, "../") || rp == "" {
		return target{}, fmt.Errorf("leaves the repository")
	}
	if _, err := os.Stat(filepath.Join(s.Repo, filepath.FromSlash(rp))); err != nil {
		return target{}, fmt.Errorf("no file %s in the repository", rp)
	}
	return target{repoPath: rp, fragment: frag}, nil
}

func anchors(p *Page) string {
	var ids []string
	for id := range p.IDs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if len(ids) > 8 {
		return fmt.Sprintf("%d headings", len(ids))
	}
	return strings.Join(ids, ", ")
}

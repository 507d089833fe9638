package website_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nullnet/nullnet/command"
	"github.com/nullnet/nullnet/config"
	"github.com/nullnet/nullnet/website/site"
	mdast "github.com/yuin/goldmark/ast"
)

// The docs coverage test keeps the references honest: every configuration key, stack file key,
// validation error, CLI command and flag, HTTP route, event kind, metric and gRPC declaration
// that the code defines must be named in the page that documents it. Each subtest fails with
// the list of missing names, so a new key without docs fails `make test`.

const repoRoot = ".."

func loadSite(t *testing.T) *site.Site {
	t.Helper()
	s, err := site.Load(".")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// page returns a page's source text, failing the test when the page does not exist.
func page(t *testing.T, s *site.Site, rel string) *site.Page {
	t.Helper()
	p := s.Pages[rel]
	if p == nil {
		t.Fatalf("website/%s does not exist", rel)
	}
	return p
}

func reportMissing(t *testing.T, where string, missing []string) {
	t.Helper()
	if len(missing) > 0 {
		sort.Strings(missing)
		missing = dedupe(missing)
		t.Errorf("%d names missing from %s:\n  %s", len(missing), where, strings.Join(missing, "\n  "))
	}
}

func dedupe(in []string) []string {
	var out []string
	for i, s := range in {
		if i == 0 || s != in[i-1] {
			out = append(out, s)
		}
	}
	return out
}

// containsWord reports whether text contains name delimited by characters that cannot be part
// of an identifier, so that "enabled" is not found inside "disabled".
func containsWord(text, name string) bool {
	re := regexp.MustCompile(`(^|[^A-Za-z0-9_.-])` + regexp.QuoteMeta(name) + `($|[^A-Za-z0-9_-])`)
	return re.MatchString(text)
}

// --- agent configuration --------------------------------------------------------------------

// section is a heading and every code span under it (subsections included).
type section struct {
	level    int
	headings []string // first tokens of the heading's code spans, and the heading's own text
	codes    map[string]bool
}

// codeSections splits a page into nested heading sections, recording the code spans of each.
func codeSections(p *site.Page) (all map[string]bool, sections []*section) {
	all = map[string]bool{}
	var open []*section
	for n := p.Doc.FirstChild(); n != nil; n = n.NextSibling() {
		if h, ok := n.(*mdast.Heading); ok {
			for len(open) > 0 && open[len(open)-1].level >= h.Level {
				open = open[:len(open)-1]
			}
			s := &section{level: h.Level, codes: map[string]bool{}}
			s.headings = append(codeSpans(h, p.Source), strings.ToLower(site.InlineText(h, p.Source)))
			open = append(open, s)
			sections = append(sections, s)
			continue
		}
		for _, c := range codeSpans(n, p.Source) {
			all[c] = true
			for _, s := range open {
				s.codes[c] = true
			}
		}
	}
	return all, sections
}

// codeSpans returns the first token of every code span under n: `enabled = true` counts as
// `enabled`, `service "name"` as `service`, `server.network` stays whole.
func codeSpans(n mdast.Node, src []byte) []string {
	var out []string
	_ = mdast.Walk(n, func(c mdast.Node, entering bool) (mdast.WalkStatus, error) {
		if cs, ok := c.(*mdast.CodeSpan); ok && entering {
			txt := strings.TrimSpace(site.InlineText(cs, src))
			if i := strings.IndexAny(txt, " ={\"("); i > 0 {
				txt = txt[:i]
			}
			out = append(out, txt)
			return mdast.WalkSkipChildren, nil
		}
		return mdast.WalkContinue, nil
	})
	return out
}

// hclKey is one attribute or block of an HCL schema: its enclosing blocks and its name.
type hclKey struct {
	blocks []string
	name   string
}

func (k hclKey) String() string {
	return strings.Join(append(append([]string{}, k.blocks...), k.name), ".")
}

// rawSchemaKeys reads the hcl struct tags of the raw* types in config/raw.go, starting at
// rawConfig: these are the keys a configuration file may use, exactly as gohcl decodes them.
func rawSchemaKeys(t *testing.T) []hclKey {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot, "config", "raw.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]*ast.StructType{}
	ast.Inspect(f, func(n ast.Node) bool {
		if ts, ok := n.(*ast.TypeSpec); ok {
			if st, ok := ts.Type.(*ast.StructType); ok {
				types[ts.Name.Name] = st
			}
		}
		return true
	})
	if types["rawConfig"] == nil {
		t.Fatal("config/raw.go has no rawConfig type; update the docs test")
	}
	var keys []hclKey
	var walk func(typ string, blocks []string)
	walk = func(typ string, blocks []string) {
		for _, fld := range types[typ].Fields.List {
			if fld.Tag == nil {
				continue
			}
			tag, _ := strconv.Unquote(fld.Tag.Value)
			hcl := reflect.StructTag(tag).Get("hcl")
			name, kind, _ := strings.Cut(hcl, ",")
			switch kind {
			case "block":
				keys = append(keys, hclKey{blocks: blocks, name: name})
				walk(baseTypeName(fld.Type), append(append([]string{}, blocks...), name))
			case "optional", "attr", "":
				if name != "" {
					keys = append(keys, hclKey{blocks: blocks, name: name})
				}
			}
		}
	}
	walk("rawConfig", nil)
	return keys
}

func baseTypeName(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.StarExpr:
		return baseTypeName(x.X)
	case *ast.ArrayType:
		return baseTypeName(x.Elt)
	case *ast.Ident:
		return x.Name
	}
	return ""
}

// jsonKeys walks config.Config by reflection: the names /v1/agent/self shows.
func jsonKeys(typ reflect.Type, prefix string, out *[]string) {
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		*out = append(*out, prefix+name)
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeOf(time.Duration(0)) {
			jsonKeys(ft, prefix+name+".", out)
		}
	}
}

func TestDocsAgentConfig(t *testing.T) {
	ws := loadSite(t)
	p := page(t, ws, "docs/agent-config.md")
	all, sections := codeSections(p)
	var missing []string
	for _, k := range rawSchemaKeys(t) {
		if len(k.blocks) == 0 {
			if !all[k.name] {
				missing = append(missing, k.String())
			}
			continue
		}
		// A block's keys are documented under a heading naming the block.
		block := k.blocks[len(k.blocks)-1]
		found := false
		for _, s := range sections {
			if containsString(s.headings, block) && (s.codes[k.name] || s.codes[k.String()]) {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, k.String()+" (under a heading naming `"+block+"`)")
		}
	}
	reportMissing(t, "website/docs/agent-config.md (HCL keys of config/raw.go)", missing)

	var jk []string
	jsonKeys(reflect.TypeOf(config.Config{}), "", &jk)
	missing = nil
	for _, k := range jk {
		leaf := k[strings.LastIndex(k, ".")+1:]
		if !all[leaf] && !all[k] {
			missing = append(missing, k)
		}
	}
	reportMissing(t, "website/docs/agent-config.md (fields of config.Config, as /v1/agent/self shows them)", missing)

	missing = nil
	for _, d := range diagnosticSummaries(t, "load.go", "merge.go", "validate.go", "duration.go", "accesslog.go") {
		if !strings.Contains(string(p.Source), d) {
			missing = append(missing, d)
		}
	}
	reportMissing(t, "website/docs/agent-config.md (validation errors)", missing)
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s || strings.HasPrefix(x, s+" ") {
			return true
		}
	}
	return false
}

// diagnosticSummaries returns the literal summaries of errAt/warnAt/hcl.Diagnostic in the
// given config files: the first line a user sees for each validation rule.
func diagnosticSummaries(t *testing.T, files ...string) []string {
	t.Helper()
	var out []string
	for _, name := range files {
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot, "config", name), nil, 0)
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.CallExpr:
				if id, ok := x.Fun.(*ast.Ident); ok && (id.Name == "errAt" || id.Name == "warnAt") && len(x.Args) > 1 {
					if s, ok := stringLit(x.Args[1]); ok {
						out = append(out, s)
					}
				}
			case *ast.KeyValueExpr:
				if k, ok := x.Key.(*ast.Ident); ok && k.Name == "Summary" {
					if s, ok := stringLit(x.Value); ok && !strings.Contains(s, "%") {
						out = append(out, s)
					}
				}
			}
			return true
		})
	}
	return out
}

func stringLit(e ast.Expr) (string, bool) {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(bl.Value)
	return s, err == nil
}

// --- stack files ----------------------------------------------------------------------------

// stackFiles are the config files that define stack-file schema and checks: config/stack.go
// and every config/stack_*.go beside it, so a new key's file cannot be left out of the check.
func stackFiles(t *testing.T) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(repoRoot, "config", "stack*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range paths {
		if !strings.HasSuffix(p, "_test.go") {
			out = append(out, filepath.Base(p))
		}
	}
	return out
}

// stackSchemaKeys reads the block types and attribute names of the hcl.BodySchema literals in
// config/stack.go (and the other stackFiles), plus any hcl struct tags, should the schema move
// to gohcl.
func stackSchemaKeys(t *testing.T) []string {
	t.Helper()
	var keys []string
	for _, name := range stackFiles(t) {
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot, "config", name), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		inspectSchema(f, &keys)
	}
	if len(keys) == 0 {
		t.Fatal("found no stack schema in config/stack.go; update the docs test")
	}
	return keys
}

func inspectSchema(f *ast.File, out *[]string) {
	keys := *out
	defer func() { *out = keys }()
	ast.Inspect(f, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.KeyValueExpr:
			if k, ok := x.Key.(*ast.Ident); ok && (k.Name == "Type" || k.Name == "Name") {
				if s, ok := stringLit(x.Value); ok {
					keys = append(keys, s)
				}
			}
		case *ast.Field:
			if x.Tag != nil {
				tag, _ := strconv.Unquote(x.Tag.Value)
				if h := reflect.StructTag(tag).Get("hcl"); h != "" {
					if name, kind, _ := strings.Cut(h, ","); name != "" && kind != "label" {
						keys = append(keys, name)
					}
				}
			}
		}
		return true
	})
}

func TestDocsStackFile(t *testing.T) {
	ws := loadSite(t)
	p := page(t, ws, "docs/stacks.md")
	all, _ := codeSections(p)
	var missing []string
	for _, k := range stackSchemaKeys(t) {
		if !all[k] {
			missing = append(missing, k)
		}
	}
	reportMissing(t, "website/docs/stacks.md (stack file keys)", missing)
	missing = nil
	for _, d := range diagnosticSummaries(t, stackFiles(t)...) {
		if !strings.Contains(string(p.Source), d) {
			missing = append(missing, d)
		}
	}
	reportMissing(t, "website/docs/stacks.md (stack validation errors)", missing)
}

// --- CLI ------------------------------------------------------------------------------------

var helpFlagRE = regexp.MustCompile(`(?m)^\s+(-[a-z][a-z0-9-]*)`)

func TestDocsCLI(t *testing.T) {
	ws := loadSite(t)
	var cliText strings.Builder
	for src, p := range ws.Pages {
		if strings.HasPrefix(src, "docs/cli/") {
			cliText.Write(p.Source)
		}
	}
	var missing []string
	for name, factory := range command.Commands(nil) {
		if !strings.Contains(cliText.String(), "nullnet "+name) {
			missing = append(missing, "nullnet "+name)
		}
		cmd, err := factory()
		if err != nil {
			t.Fatalf("command %q: %v", name, err)
		}
		first, _, _ := strings.Cut(name, " ")
		rel := "docs/cli/" + first + ".md"
		var text string
		if p := ws.Pages[rel]; p != nil {
			text = string(p.Source)
		}
		for _, m := range helpFlagRE.FindAllStringSubmatch(cmd.Help(), -1) {
			if !containsWord(text, m[1]) {
				missing = append(missing, "nullnet "+name+" "+m[1]+" (in website/"+rel+")")
			}
		}
	}
	reportMissing(t, "the CLI reference website/docs/cli/", missing)
}

// --- HTTP API -------------------------------------------------------------------------------

var routeRE = regexp.MustCompile(`\.Handle(?:Func)?\(\s*"(?:([A-Z]+) )?(/v1/[^"]*)"`)

// httpRoutes finds every route registered on a ServeMux in the agent's code.
func httpRoutes(t *testing.T) [][2]string {
	t.Helper()
	var routes [][2]string
	err := filepath.Walk(filepath.Join(repoRoot, "agent"), func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range routeRE.FindAllStringSubmatch(string(b), -1) {
			routes = append(routes, [2]string{m[1], m[2]})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) == 0 {
		t.Fatal("found no HTTP routes under agent/; update the docs test")
	}
	return routes
}

func TestDocsHTTPAPI(t *testing.T) {
	ws := loadSite(t)
	var lines []string
	for src, p := range ws.Pages {
		if strings.HasPrefix(src, "docs/api/") {
			lines = append(lines, strings.Split(string(p.Source), "\n")...)
		}
	}
	var missing []string
	for _, r := range httpRoutes(t) {
		method, path := r[0], r[1]
		found := false
		for _, l := range lines {
			if containsWord(l, path) && (method == "" || strings.Contains(l, method)) {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, strings.TrimSpace(method+" "+path))
		}
	}
	reportMissing(t, "the HTTP API reference website/docs/api/ (a line naming the method and the path)", missing)
}

// --- events and metrics ---------------------------------------------------------------------

// eventKinds reads the string constants of agent/events/kinds.go.
func eventKinds(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot, "agent", "events", "kinds.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	ast.Inspect(f, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok {
			for _, v := range vs.Values {
				if s, ok := stringLit(v); ok {
					kinds = append(kinds, s)
				}
			}
		}
		return true
	})
	if len(kinds) == 0 {
		t.Fatal("found no event kinds in agent/events/kinds.go")
	}
	return kinds
}

func TestDocsEvents(t *testing.T) {
	ws := loadSite(t)
	text := string(page(t, ws, "docs/events.md").Source)
	var missing []string
	for _, k := range eventKinds(t) {
		if !containsWord(text, k) {
			missing = append(missing, k)
		}
	}
	reportMissing(t, "website/docs/events.md (kinds of agent/events/kinds.go)", missing)
}

var metricRE = regexp.MustCompile(`\[\]string\{\s*("nullnet"(?:\s*,\s*"[a-z0-9_]+")*)\s*\}`)

func TestDocsMetrics(t *testing.T) {
	ws := loadSite(t)
	text := string(page(t, ws, "docs/metrics.md").Source)
	var missing []string
	err := filepath.Walk(filepath.Join(repoRoot, "agent"), func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range metricRE.FindAllStringSubmatch(string(b), -1) {
			var parts []string
			for _, q := range strings.Split(m[1], ",") {
				s, _ := strconv.Unquote(strings.TrimSpace(q))
				parts = append(parts, s)
			}
			dotted, prom := strings.Join(parts, "."), strings.Join(parts, "_")
			if !containsWord(text, dotted) && !containsWord(text, prom) {
				missing = append(missing, dotted)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	reportMissing(t, "website/docs/metrics.md (metric names used under agent/)", missing)
}

// --- gRPC contract --------------------------------------------------------------------------

var (
	protoDeclRE  = regexp.MustCompile(`(?m)^\s*(?:message|enum|service|rpc)\s+([A-Za-z0-9_]+)`)
	protoFieldRE = regexp.MustCompile(`(?m)^\s*(?:repeated\s+|optional\s+)?(?:map<[^>]+>|[A-Za-z0-9_.]+)\s+([a-z][a-z0-9_]*)\s*=\s*\d+\s*;`)
	protoEnumRE  = regexp.MustCompile(`(?m)^\s*([A-Z][A-Z0-9_]*)\s*=\s*\d+\s*;`)
)

// TestDocsGRPC checks that every service, rpc, message, enum value and field of
// proto/nullnet.proto is named in website/docs/grpc.md, so an additive change to the contract
// cannot land undocumented.
func TestDocsGRPC(t *testing.T) {
	ws := loadSite(t)
	text := string(page(t, ws, "docs/grpc.md").Source)
	b, err := os.ReadFile(filepath.Join(repoRoot, "proto", "nullnet.proto"))
	if err != nil {
		t.Fatal(err)
	}
	// Comments may mention names in passing; only declarations count.
	src := regexp.MustCompile(`//[^\n]*`).ReplaceAllString(string(b), "")
	var missing []string
	for _, re := range []*regexp.Regexp{protoDeclRE, protoFieldRE, protoEnumRE} {
		for _, m := range re.FindAllStringSubmatch(src, -1) {
			if !containsWord(text, m[1]) {
				missing = append(missing, m[1])
			}
		}
	}
	reportMissing(t, "website/docs/grpc.md (declarations of proto/nullnet.proto)", missing)
}

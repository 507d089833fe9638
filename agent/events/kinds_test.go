package events

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// TestEmitSitesMatchSpecs scans the agent's source with go/ast for every events.Event literal
// and checks it against the registry in kinds.go (which website/docs/events.md is checked
// against): each kind emitted is declared, each field key an emit site sets is declared for its
// kind, each declared field is set by some emit site, and every kind that is not Reserved is
// emitted somewhere (a Reserved one nowhere). Kinds and fields held in variables are followed
// to their assignments in the enclosing functions, to helper closures that build the map, and
// to []string key/value pairs handed to the function that builds it.
func TestEmitSitesMatchSpecs(t *testing.T) {
	consts := kindConstants(t)
	spec := map[string]Spec{}
	for _, s := range Specs() {
		spec[s.Kind] = s
	}
	sites := scanEmitSites(t, filepath.Join("..", ""), consts)
	if len(sites) < 20 {
		t.Fatalf("found only %d emit sites; the scanner no longer recognises them", len(sites))
	}
	emitted := map[string]map[string]bool{}
	for _, st := range sites {
		t.Logf("%s %v %v", st.pos, st.kinds, keys(st.fields))
		allowed := map[string]bool{}
		for _, k := range st.kinds {
			s, ok := spec[k]
			if !ok {
				t.Errorf("%s: kind %q is not declared in kinds.go's specs", st.pos, k)
				continue
			}
			if s.Reserved {
				t.Errorf("%s: kind %q is emitted but marked Reserved", st.pos, k)
			}
			for _, f := range s.Fields {
				allowed[f] = true
			}
			if emitted[k] == nil {
				emitted[k] = map[string]bool{}
			}
			for f := range st.fields {
				emitted[k][f] = true
			}
		}
		for f := range st.fields {
			if !allowed[f] {
				t.Errorf("%s: field %q is set for %v but not declared in kinds.go", st.pos, f, st.kinds)
			}
		}
	}
	for _, s := range Specs() {
		if s.Reserved {
			continue
		}
		if emitted[s.Kind] == nil {
			t.Errorf("kind %q is declared but never emitted (mark it Reserved if that is intended)", s.Kind)
			continue
		}
		_, aggregated := RemoteTriggered[s.Kind]
		for _, f := range s.Fields {
			if aggregated && slices.Contains(AggregateFields, f) {
				continue // added by the Aggregator, not by an emit site
			}
			if !emitted[s.Kind][f] {
				t.Errorf("kind %q declares field %q that no emit site sets", s.Kind, f)
			}
		}
	}
}

// kindConstants maps the Go names of kinds.go's constants to their values.
func kindConstants(t *testing.T) map[string]string {
	f, err := parser.ParseFile(token.NewFileSet(), "kinds.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, sp := range g.Specs {
			vs := sp.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if i < len(vs.Values) {
					if s, ok := strLit(vs.Values[i]); ok {
						out[n.Name] = s
					}
				}
			}
		}
	}
	return out
}

type emitSite struct {
	pos    string
	kinds  []string
	fields map[string]bool
}

// pkgFiles is one package's parsed files.
type pkgFiles struct {
	fset  *token.FileSet
	files []*ast.File
}

func scanEmitSites(t *testing.T, root string, consts map[string]string) []emitSite {
	pkgs := map[string]*pkgFiles{}
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		dir := filepath.Dir(p)
		if filepath.Base(dir) == "events" { // the package itself only copies events (FromProto)
			return nil
		}
		pf := pkgs[dir]
		if pf == nil {
			pf = &pkgFiles{fset: token.NewFileSet()}
			pkgs[dir] = pf
		}
		f, err := parser.ParseFile(pf.fset, p, nil, 0)
		if err != nil {
			return err
		}
		pf.files = append(pf.files, f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var sites []emitSite
	for _, pf := range pkgs {
		for _, f := range pf.files {
			var stack []ast.Node // enclosing functions, innermost last
			var visit func(n ast.Node) bool
			visit = func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.FuncDecl, *ast.FuncLit:
					if funcBody(n) == nil {
						return false
					}
					stack = append(stack, n)
					ast.Inspect(funcBody(n), visit)
					stack = stack[:len(stack)-1]
					return false
				case *ast.CompositeLit:
					if !isEventType(n.Type) {
						return true
					}
					pos := pf.fset.Position(n.Pos()).String()
					s := emitSite{pos: pos, fields: map[string]bool{}}
					r := resolver{t: t, pf: pf, consts: consts, pos: pos}
					for _, el := range n.Elts {
						kv, ok := el.(*ast.KeyValueExpr)
						if !ok {
							continue
						}
						switch key := kv.Key.(*ast.Ident); {
						case key == nil:
						case key.Name == "Kind":
							s.kinds = r.kinds(kv.Value, stack)
						case key.Name == "Fields":
							r.fields(kv.Value, stack, s.fields, 0)
						}
					}
					if len(s.kinds) == 0 {
						t.Errorf("%s: cannot tell the kind of this event", pos)
					}
					sites = append(sites, s)
				}
				return true
			}
			ast.Inspect(f, visit)
		}
	}
	sort.Slice(sites, func(i, j int) bool { return sites[i].pos < sites[j].pos })
	return sites
}

func funcBody(n ast.Node) *ast.BlockStmt {
	switch f := n.(type) {
	case *ast.FuncDecl:
		return f.Body
	case *ast.FuncLit:
		return f.Body
	}
	return nil
}

func funcParams(n ast.Node) *ast.FieldList {
	switch f := n.(type) {
	case *ast.FuncDecl:
		return f.Type.Params
	case *ast.FuncLit:
		return f.Type.Params
	}
	return nil
}

func isEventType(e ast.Expr) bool {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	x, ok := sel.X.(*ast.Ident)
	return ok && x.Name == "events" && sel.Sel.Name == "Event"
}

func strLit(e ast.Expr) (string, bool) {
	b, ok := e.(*ast.BasicLit)
	if !ok || b.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(b.Value)
	return s, err == nil
}

type resolver struct {
	t      *testing.T
	pf     *pkgFiles
	consts map[string]string
	pos    string
}

// assigned returns every expression assigned to name in the innermost function of stack that
// assigns it (closures see their enclosing functions' variables).
func assigned(name string, stack []ast.Node) ([]ast.Expr, []ast.Node) {
	for i := len(stack) - 1; i >= 0; i-- {
		var out []ast.Expr
		ast.Inspect(funcBody(stack[i]), func(n ast.Node) bool {
			if fl, ok := n.(*ast.FuncLit); ok && i < len(stack)-1 && fl == stack[i+1] {
				return true
			}
			as, ok := n.(*ast.AssignStmt)
			if !ok {
				return true
			}
			for j, l := range as.Lhs {
				id, ok := l.(*ast.Ident)
				switch {
				case !ok || id.Name != name:
				case len(as.Rhs) == len(as.Lhs):
					out = append(out, as.Rhs[j])
				case len(as.Rhs) == 1 && j == 0: // v, err := call(): the call's first result
					out = append(out, as.Rhs[0])
				}
			}
			return true
		})
		if len(out) > 0 {
			return out, stack[:i+1]
		}
	}
	return nil, nil
}

func (r resolver) kinds(e ast.Expr, stack []ast.Node) []string {
	switch e := e.(type) {
	case *ast.SelectorExpr:
		if x, ok := e.X.(*ast.Ident); ok && x.Name == "events" {
			if v, ok := r.consts[e.Sel.Name]; ok {
				return []string{v}
			}
			r.t.Errorf("%s: events.%s is not a kind constant", r.pos, e.Sel.Name)
		}
	case *ast.Ident:
		exprs, scope := assigned(e.Name, stack)
		var out []string
		for _, x := range exprs {
			out = append(out, r.kinds(x, scope)...)
		}
		return out
	}
	return nil
}

// fields adds the keys expression e (a map[string]string) can hold to out.
func (r resolver) fields(e ast.Expr, stack []ast.Node, out map[string]bool, depth int) {
	if depth > 4 {
		r.t.Errorf("%s: fields too deeply indirect to follow", r.pos)
		return
	}
	switch e := e.(type) {
	case *ast.CompositeLit:
		for _, el := range e.Elts {
			kv, ok := el.(*ast.KeyValueExpr)
			if !ok {
				continue
			}
			if k, ok := strLit(kv.Key); ok {
				out[k] = true
			} else {
				r.t.Errorf("%s: a Fields key that is not a string literal", r.pos)
			}
		}
	case *ast.Ident:
		if e.Name == "nil" {
			return
		}
		exprs, scope := assigned(e.Name, stack)
		if len(exprs) == 0 {
			r.t.Errorf("%s: cannot follow Fields variable %s", r.pos, e.Name)
			return
		}
		for _, x := range exprs {
			r.fields(x, scope, out, depth+1)
		}
		r.indexAssigns(e.Name, scope, out)
	case *ast.CallExpr:
		// A helper that builds the map: a closure assigned in an enclosing function.
		id, ok := e.Fun.(*ast.Ident)
		if !ok {
			r.t.Errorf("%s: cannot follow Fields built by a call", r.pos)
			return
		}
		exprs, _ := assigned(id.Name, stack)
		for _, x := range exprs {
			fl, ok := x.(*ast.FuncLit)
			if !ok {
				continue
			}
			inner := append(append([]ast.Node(nil), stack...), fl)
			ast.Inspect(fl.Body, func(n ast.Node) bool {
				if ret, ok := n.(*ast.ReturnStmt); ok && len(ret.Results) == 1 {
					r.fields(ret.Results[0], inner, out, depth+1)
				}
				return true
			})
		}
	case *ast.SelectorExpr:
		r.t.Errorf("%s: cannot follow Fields %s.%s", r.pos, e.X, e.Sel.Name)
	}
}

// indexAssigns adds the keys of `name["key"] = ...` in the innermost function of scope; a key
// that is itself `pairs[i]` of a []string parameter is followed to the callers' arguments.
func (r resolver) indexAssigns(name string, scope []ast.Node, out map[string]bool) {
	fn := scope[len(scope)-1]
	ast.Inspect(funcBody(fn), func(n ast.Node) bool {
		as, ok := n.(*ast.AssignStmt)
		if !ok {
			return true
		}
		for _, l := range as.Lhs {
			ix, ok := l.(*ast.IndexExpr)
			if !ok {
				continue
			}
			if id, ok := ix.X.(*ast.Ident); !ok || id.Name != name {
				continue
			}
			if k, ok := strLit(ix.Index); ok {
				out[k] = true
				continue
			}
			r.pairsFromCallers(ix.Index, fn, out)
		}
		return true
	})
}

// pairsFromCallers follows `fields[pairs[i]] = pairs[i+1]`, where pairs is a []string parameter
// of fn, to the even-position string literals every caller passes (directly, or as what a
// method of the package returns).
func (r resolver) pairsFromCallers(key ast.Expr, fn ast.Node, out map[string]bool) {
	ix, ok := key.(*ast.IndexExpr)
	param := -1
	if ok {
		if id, ok := ix.X.(*ast.Ident); ok {
			i := 0
			for _, f := range funcParams(fn).List {
				for _, n := range f.Names {
					if n.Name == id.Name {
						param = i
					}
					i++
				}
				if len(f.Names) == 0 {
					i++
				}
			}
		}
	}
	decl, isDecl := fn.(*ast.FuncDecl)
	if param < 0 || !isDecl {
		r.t.Errorf("%s: a Fields key the scanner cannot follow", r.pos)
		return
	}
	pairs := func(e ast.Expr) {
		if cl, ok := e.(*ast.CompositeLit); ok {
			for i := 0; i < len(cl.Elts); i += 2 {
				if s, ok := strLit(cl.Elts[i]); ok {
					out[s] = true
				}
			}
		}
	}
	methods := map[string]*ast.FuncDecl{}
	for _, f := range r.pf.files {
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok {
				methods[fd.Name.Name] = fd
			}
		}
	}
	for _, f := range r.pf.files {
		for _, d := range f.Decls {
			caller, ok := d.(*ast.FuncDecl)
			if !ok || caller.Body == nil {
				continue
			}
			ast.Inspect(caller.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || param >= len(call.Args) {
					return true
				}
				name := ""
				switch fun := call.Fun.(type) {
				case *ast.Ident:
					name = fun.Name
				case *ast.SelectorExpr:
					name = fun.Sel.Name
				}
				if name != decl.Name.Name {
					return true
				}
				arg := call.Args[param]
				pairs(arg)
				if id, ok := arg.(*ast.Ident); ok {
					exprs, _ := assigned(id.Name, []ast.Node{caller})
					for _, x := range exprs {
						c, ok := x.(*ast.CallExpr)
						if !ok {
							continue
						}
						sel, ok := c.Fun.(*ast.SelectorExpr)
						if !ok || methods[sel.Sel.Name] == nil {
							continue
						}
						ast.Inspect(methods[sel.Sel.Name].Body, func(n ast.Node) bool {
							if ret, ok := n.(*ast.ReturnStmt); ok && len(ret.Results) > 0 {
								pairs(ret.Results[0])
							}
							return true
						})
					}
				}
				return true
			})
		}
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

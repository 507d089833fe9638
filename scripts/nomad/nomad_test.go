// Package nomad holds nullnet's Nomad job files. Nomad's own packages cannot be built here, so
// this test parses every job file with hcl/v2, walks the bodies, and checks the fields nullnet
// relies on; it also renders each template block the way Nomad's consul-template would (env,
// key_or_default, ls) and loads the result with nullnet's own configuration loader, so a job
// whose rendered configuration would not start an agent fails here.
package nomad

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/nullnet/nullnet/config"
	"github.com/zclconf/go-cty/cty"
)

// evalCtx resolves the Nomad interpolations the job files use.
var evalCtx = &hcl.EvalContext{Variables: map[string]cty.Value{
	"NOMAD_TASK_DIR":    cty.StringVal("/alloc/task/local"),
	"NOMAD_SECRETS_DIR": cty.StringVal("/alloc/task/secrets"),
	"attr":              cty.ObjectVal(map[string]cty.Value{"kernel": cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal("linux")})}),
}}

type jobFile struct {
	path string
	job  *hclsyntax.Block
}

func parseJobs(t *testing.T) map[string]*jobFile {
	t.Helper()
	paths, err := filepath.Glob("*.nomad.hcl")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no *.nomad.hcl files in scripts/nomad (err %v)", err)
	}
	jobs := map[string]*jobFile{}
	p := hclparse.NewParser()
	for _, path := range paths {
		f, diags := p.ParseHCLFile(path)
		if diags.HasErrors() {
			t.Fatalf("%s: %s", path, diags.Error())
		}
		body := f.Body.(*hclsyntax.Body)
		var found []*hclsyntax.Block
		for _, b := range body.Blocks {
			if b.Type == "job" {
				found = append(found, b)
			}
		}
		if len(found) != 1 || len(found[0].Labels) != 1 {
			t.Fatalf("%s: want exactly one labelled job block, got %d", path, len(found))
		}
		jobs[found[0].Labels[0]] = &jobFile{path: path, job: found[0]}
	}
	return jobs
}

func blocks(b *hclsyntax.Block, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, c := range b.Body.Blocks {
		if c.Type == typ {
			out = append(out, c)
		}
	}
	return out
}

func one(t *testing.T, b *hclsyntax.Block, typ string) *hclsyntax.Block {
	t.Helper()
	bs := blocks(b, typ)
	if len(bs) != 1 {
		t.Fatalf("%s %v: want one %q block, got %d", b.Type, b.Labels, typ, len(bs))
	}
	return bs[0]
}

// attr evaluates an attribute of a block (nil when absent).
func attr(t *testing.T, b *hclsyntax.Block, name string) *cty.Value {
	t.Helper()
	a := b.Body.Attributes[name]
	if a == nil {
		return nil
	}
	v, diags := a.Expr.Value(evalCtx)
	if diags.HasErrors() {
		t.Fatalf("%s %v: %s: %s", b.Type, b.Labels, name, diags.Error())
	}
	return &v
}

func str(t *testing.T, b *hclsyntax.Block, name string) string {
	t.Helper()
	v := attr(t, b, name)
	if v == nil || v.Type() != cty.String {
		return ""
	}
	return v.AsString()
}

// task finds the only task of the job's only group.
func task(t *testing.T, j *jobFile) (group, task *hclsyntax.Block) {
	t.Helper()
	group = one(t, j.job, "group")
	return group, one(t, group, "task")
}

// renderTemplate renders a template block's data as consul-template would, with the Nomad
// environment env and Consul KV kv (key_or_default falls back to its default).
func renderTemplate(t *testing.T, data string, env map[string]string, kv map[string]string) string {
	t.Helper()
	type pair struct{ Key, Value string }
	funcs := template.FuncMap{
		"env": func(k string) string { return env[k] },
		"key_or_default": func(k, def string) string {
			if v, ok := kv[k]; ok {
				return v
			}
			return def
		},
		"ls": func(prefix string) []pair {
			var out []pair
			for k, v := range kv {
				if rest, ok := strings.CutPrefix(k, prefix+"/"); ok {
					out = append(out, pair{rest, v})
				}
			}
			return out
		},
	}
	tmpl, err := template.New("t").Funcs(funcs).Parse(data)
	if err != nil {
		t.Fatalf("template: %v", err)
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, nil); err != nil {
		t.Fatalf("template: %v", err)
	}
	return b.String()
}

// loadRendered writes a rendered agent configuration and loads it with nullnet's loader.
func loadRendered(t *testing.T, text string) *config.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.hcl")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	res := config.Load([]config.Source{{Path: p}}, false)
	if res.Diags.HasErrors() {
		var b strings.Builder
		_ = config.WriteDiagnostics(&b, res.Files, res.Diags)
		t.Fatalf("rendered configuration does not load:\n%s\n--- rendered:\n%s", b.String(), text)
	}
	return res.Config
}

// checkAgentTask checks what every nullnet task relies on: raw_exec (netlink and low ports
// need the host's privileges), `nullnet agent -config-file=` pointing at the rendered
// template, SIGHUP on template change, a graceful SIGTERM stop, and the host network.
func checkAgentTask(t *testing.T, group, tk *hclsyntax.Block) (tmplData string) {
	t.Helper()
	if d := str(t, tk, "driver"); d != "raw_exec" {
		t.Errorf("task driver = %q, want raw_exec", d)
	}
	cfg := one(t, tk, "config")
	if c := str(t, cfg, "command"); !strings.HasSuffix(c, "/nullnet") {
		t.Errorf("config.command = %q, want the nullnet binary", c)
	}
	args := attr(t, cfg, "args")
	if args == nil || !args.CanIterateElements() || args.LengthInt() < 2 {
		t.Fatalf("config.args must be [\"agent\", \"-config-file=...\"]")
	}
	elems := args.AsValueSlice()
	if elems[0].AsString() != "agent" {
		t.Errorf("args[0] = %q, want agent", elems[0].AsString())
	}
	cfgFile, ok := strings.CutPrefix(elems[1].AsString(), "-config-file=")
	if !ok {
		t.Fatalf("args[1] = %q, want -config-file=...", elems[1].AsString())
	}
	var found bool
	for _, tb := range blocks(tk, "template") {
		dest := str(t, tb, "destination")
		if filepath.Base(dest) != filepath.Base(cfgFile) || !strings.HasPrefix(dest, "local/") {
			continue
		}
		found = true
		if m, s := str(t, tb, "change_mode"), str(t, tb, "change_signal"); m != "signal" || s != "SIGHUP" {
			t.Errorf("config template: change_mode %q change_signal %q, want signal SIGHUP (the agent reloads on SIGHUP)", m, s)
		}
		tmplData = str(t, tb, "data")
	}
	if !found {
		t.Fatalf("no template block renders %s", cfgFile)
	}
	if s := str(t, tk, "kill_signal"); s != "SIGTERM" {
		t.Errorf("kill_signal = %q, want SIGTERM (graceful stop)", s)
	}
	if mode := str(t, one(t, group, "network"), "mode"); mode != "host" {
		t.Errorf("network mode = %q, want host (listeners and tunnels live in the host namespace)", mode)
	}
	return tmplData
}

func TestAgentJob(t *testing.T) {
	j := parseJobs(t)["nullnet-agent"]
	if j == nil {
		t.Fatal("no job \"nullnet-agent\"")
	}
	if typ := str(t, j.job, "type"); typ != "system" {
		t.Errorf("type = %q, want system (one agent on every client node)", typ)
	}
	group, tk := task(t, j)
	data := checkAgentTask(t, group, tk)
	env := map[string]string{"node.unique.name": "edge-1", "NOMAD_DC": "dc1",
		"attr.unique.network.ip-address": "192.0.2.30"}
	for _, proxy := range []string{"true", ""} {
		env["meta.nullnet_proxy"] = proxy
		cfg := loadRendered(t, renderTemplate(t, data, env, map[string]string{"nullnet/config/log_level": "debug"}))
		want := "client"
		if proxy == "true" {
			want = "client,proxy"
		}
		if got := strings.Join(cfg.Roles(), ","); got != want {
			t.Errorf("meta.nullnet_proxy=%q: roles %s, want %s", proxy, got, want)
		}
		if cfg.NodeName != "edge-1" || cfg.AdvertiseAddr != "192.0.2.30" || cfg.LogLevel != "debug" {
			t.Errorf("rendered identity: node %q advertise %q log_level %q", cfg.NodeName, cfg.AdvertiseAddr, cfg.LogLevel)
		}
	}
}

func TestServerJob(t *testing.T) {
	j := parseJobs(t)["nullnet-server"]
	if j == nil {
		t.Fatal("no job \"nullnet-server\"")
	}
	if typ := str(t, j.job, "type"); typ != "service" {
		t.Errorf("type = %q, want service", typ)
	}
	group, tk := task(t, j)
	data := checkAgentTask(t, group, tk)
	stack, err := os.ReadFile("redis-demo.stack.hcl")
	if err != nil {
		t.Fatal(err)
	}
	taskDir := t.TempDir()
	env := map[string]string{"node.unique.name": "ctl-1", "NOMAD_DC": "dc1", "NOMAD_TASK_DIR": taskDir,
		"attr.unique.network.ip-address": "192.0.2.10", "NOMAD_PORT_http": "4700", "NOMAD_PORT_grpc": "4701"}
	kv := map[string]string{"nullnet/stacks/demo": string(stack)}
	cfg := loadRendered(t, renderTemplate(t, data, env, kv))
	if !cfg.Server.Enabled || cfg.Server.StacksDir != taskDir+"/stacks" || cfg.Server.Network != "vxlan" {
		t.Errorf("rendered server block: %+v", cfg.Server)
	}
	// The stacks template renders KV into stacks_dir; the result must be a valid stack set.
	var stacksData string
	for _, tb := range blocks(tk, "template") {
		if dest := str(t, tb, "destination"); strings.HasPrefix(dest, "local/stacks/") && strings.HasSuffix(dest, ".hcl") {
			if m := str(t, tb, "change_mode"); m != "noop" {
				t.Errorf("stacks template change_mode = %q, want noop (the server watches stacks_dir)", m)
			}
			stacksData = str(t, tb, "data")
		}
	}
	if stacksData == "" {
		t.Fatal("no template renders local/stacks/*.hcl")
	}
	rendered := renderTemplate(t, stacksData, env, kv)
	set := config.ParseStacks([]config.StackFile{{Path: "stacks.hcl", Bytes: []byte(rendered)}}, config.StackRules{})
	if set.Diags.HasErrors() || len(set.Services()) != 1 {
		t.Errorf("rendered stacks: %s (%d services)\n%s", set.Diags.Error(), len(set.Services()), rendered)
	}
}

func TestWorkloadJobAndStack(t *testing.T) {
	j := parseJobs(t)["redis-demo"]
	if j == nil {
		t.Fatal("no job \"redis-demo\"")
	}
	b, err := os.ReadFile("redis-demo.stack.hcl")
	if err != nil {
		t.Fatal(err)
	}
	set := config.ParseStacks([]config.StackFile{{Path: "redis-demo.stack.hcl", Bytes: b}}, config.StackRules{})
	if set.Diags.HasErrors() {
		t.Fatalf("redis-demo.stack.hcl: %s", set.Diags.Error())
	}
	defs := map[string]config.StackService{}
	for _, s := range set.Services() {
		defs[s.Name] = s
	}
	group := one(t, j.job, "group")
	ports := map[string]bool{}
	for _, p := range blocks(one(t, group, "network"), "port") {
		ports[p.Labels[0]] = true
	}
	svc := one(t, group, "service")
	name := str(t, svc, "name")
	def, ok := defs[name]
	if !ok {
		t.Fatalf("service %q has no stack service of that name in redis-demo.stack.hcl: replicas are matched by name", name)
	}
	if !def.EntryPoint {
		t.Errorf("stack service %q has no timeout: the proxies would not expose it", name)
	}
	if p := str(t, svc, "provider"); p != "" && p != "consul" {
		t.Errorf("service provider = %q: nullnet reads replicas from Consul", p)
	}
	if !ports[str(t, svc, "port")] {
		t.Errorf("service port %q is not a port of the group's network block", str(t, svc, "port"))
	}
	if m := str(t, svc, "address_mode"); m != "host" {
		t.Errorf("address_mode = %q, want host: tunnels deliver to the host's address", m)
	}
	chk := one(t, svc, "check")
	if typ := str(t, chk, "type"); typ != def.Protocol {
		t.Errorf("check type = %q, want %q: only passing instances are replicas, and the check must probe the port", typ, def.Protocol)
	}
}

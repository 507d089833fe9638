package devdemo

import (
	"testing"

	"github.com/nullnet/nullnet/config"
)

// The embedded demo stacks validate under -dev's rules and declare exactly the services the
// backends serve, so each demo service has a replica.
func TestDemoStacksMatchBackends(t *testing.T) {
	dir := t.TempDir()
	if err := WriteStacks(dir); err != nil {
		t.Fatal(err)
	}
	res := config.Load(nil, true)
	set := config.LoadStacks(dir, config.StackRulesFor(res.Config))
	if set.Diags.HasErrors() {
		t.Fatal(config.FormatDiagnostics(set.Files, set.Diags))
	}
	b, err := Listen("127.0.0.1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	want := map[string]string{}
	for _, s := range b.Services() {
		want[s.Name] = s.Protocol
		if s.Stack != Stack || s.Port == 0 {
			t.Errorf("backend %+v", s)
		}
	}
	got := map[string]string{}
	for _, s := range set.Services() {
		if s.Stack != Stack {
			t.Errorf("service %s in stack %q, want %q", s.Name, s.Stack, Stack)
		}
		proto := s.Protocol
		if proto == "http" {
			proto = "tcp"
		}
		got[s.Name] = proto
	}
	if len(got) != len(want) {
		t.Fatalf("stack services %v, backends %v", got, want)
	}
	for name, p := range want {
		if got[name] != p {
			t.Errorf("%s: stack protocol %q, backend %q", name, got[name], p)
		}
	}
}

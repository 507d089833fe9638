package command

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/cli"
)

func TestValidateCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.hcl")
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(good, []byte("node_name = \"n1\"\nserver {\n  enabled = true\n  stacks_dir = \"/tmp\"\n}\n"), 0o644)
	os.WriteFile(bad, []byte("node_name = \"n1\"\nbogus_key = true\nports {\n  http = \"eighty\"\n}\n"), 0o644)

	cases := []struct {
		name     string
		args     []string
		code     int
		contains []string
	}{
		{"valid file", []string{good}, 0, []string{"valid"}},
		{"unknown key and wrong type", []string{bad}, 1, []string{
			bad + ":2:1: error: Unsupported argument", "bogus_key = true",
			bad + ":4:11: error: Unsuitable value type", `http = "eighty"`, "2 error(s)"}},
		{"directory", []string{dir}, 1, []string{"bad.hcl:2:1"}},
		{"no args", nil, 2, []string{"Usage: nullnet validate"}},
		{"bad flag", []string{"-nope", good}, 2, []string{"flag provided but not defined"}},
		{"missing path", []string{filepath.Join(dir, "absent.hcl")}, 1, []string{"no such file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ui := cli.NewMockUi()
			code := (&ValidateCommand{UI: ui}).Run(tc.args)
			out := ui.OutputWriter.String() + ui.ErrorWriter.String()
			if code != tc.code {
				t.Fatalf("exit %d, want %d; output:\n%s", code, tc.code, out)
			}
			for _, w := range tc.contains {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	if code := Run([]string{"no-such-command"}); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
	if code := Run([]string{"version"}); code != 0 {
		t.Errorf("version: exit %d, want 0", code)
	}
	if code := Run([]string{"version", "extra"}); code != 2 {
		t.Errorf("version with args: exit %d, want 2", code)
	}
	if code := Run([]string{"agent", "-no-such-flag"}); code != 2 {
		t.Errorf("agent bad flag: exit %d, want 2", code)
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	for name, f := range Commands(cli.NewMockUi()) {
		c, err := f()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.HasPrefix(c.Help(), "Usage: nullnet "+name) {
			t.Errorf("%s: help must start with its usage line, got %q", name, firstLine(c.Help()))
		}
		if c.Synopsis() == "" {
			t.Errorf("%s: empty synopsis", name)
		}
	}
}

func firstLine(s string) string { return strings.SplitN(s, "\n", 2)[0] }

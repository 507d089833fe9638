package command

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/cli"
)

const demoStack = `stack "demo" {
  service "echo.tcp" {
    protocol    = "tcp"
    listen_port = 9000
    timeout     = "30s"
  }
}
`

// `nullnet validate FILE` on a stack file checks it as one (it used to report `Unsupported
// block type ... "stack"`), a directory of stack files as a stacks directory, and a FIFO (or
// any non-regular file) is a clear error within a bounded time, never a hang.
func TestValidateStackFilesAndNonRegularFiles(t *testing.T) {
	dir := t.TempDir()
	stacks := filepath.Join(dir, "stacks")
	os.Mkdir(stacks, 0o755)
	stackFile := filepath.Join(stacks, "demo.hcl")
	os.WriteFile(stackFile, []byte(demoStack), 0o644)
	badStack := filepath.Join(dir, "bad-stack.hcl")
	os.WriteFile(badStack, []byte(strings.Replace(demoStack, `"30s"`, `"soon"`, 1)), 0o644)
	agentCfg := filepath.Join(dir, "agent.hcl")
	os.WriteFile(agentCfg, []byte("node_name = \"n1\"\nports {\n  http = 9000\n}\n"), 0o644)
	fifoDir := filepath.Join(dir, "fifo-stacks")
	os.Mkdir(fifoDir, 0o755)
	os.WriteFile(filepath.Join(fifoDir, "a.hcl"), []byte(demoStack), 0o644)
	fifo := filepath.Join(fifoDir, "pipe.hcl")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		args     []string
		code     int
		contains []string
		lacks    []string
	}{
		{"stack file", []string{stackFile}, 0, []string{"as stack files", "-stacks DIR", "1 stack file(s) (1 stack(s), 1 service(s)): valid"},
			[]string{"Unsupported block type"}},
		{"invalid stack file", []string{badStack}, 1, []string{"bad-stack.hcl:5:", "1 error(s) in 1 stack file(s)"},
			[]string{"Unsupported block type"}},
		{"stacks directory", []string{stacks}, 0, []string{"as a stacks directory", "1 stack file(s) in " + stacks}, nil},
		{"stack file with the agent's reserved ports", []string{agentCfg, stackFile}, 1,
			[]string{"1 configuration file(s): valid", "demo.hcl:2:3"}, nil},
		{"fifo as PATH", []string{fifo}, 1, []string{"pipe.hcl", "named pipe"}, nil},
		{"fifo in -stacks", []string{"-stacks", fifoDir}, 1, []string{"pipe.hcl", "named pipe"}, nil},
		{"fifo in a config directory", []string{fifoDir}, 1, []string{"pipe.hcl", "named pipe"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ui := cli.NewMockUi()
			code := make(chan int, 1)
			go func() { code <- (&ValidateCommand{UI: ui}).Run(tc.args) }()
			var got int
			select {
			case got = <-code:
			case <-time.After(5 * time.Second):
				t.Fatal("validate did not return within 5 s")
			}
			out := ui.OutputWriter.String() + ui.ErrorWriter.String()
			if got != tc.code {
				t.Fatalf("exit %d, want %d; output:\n%s", got, tc.code, out)
			}
			for _, w := range tc.contains {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.lacks {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

// An unknown -kind is an error listing the valid kinds (it used to print nothing and exit 0).
func TestEventsUnknownKind(t *testing.T) {
	ui := cli.NewMockUi()
	code := (&EventsCommand{UI: ui}).Run([]string{"-kind", "nosuchkind", "-http-addr", "127.0.0.1:1"})
	out := ui.ErrorWriter.String()
	if code != 2 {
		t.Fatalf("exit %d, want 2; output:\n%s", code, out)
	}
	for _, w := range []string{`unknown -kind "nosuchkind"`, "session_torn_down", "listener_opened", "config_reloaded"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

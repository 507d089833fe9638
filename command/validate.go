package command

import (
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/cli"
	"github.com/hashicorp/hcl/v2"
	"github.com/nullnet/nullnet/config"
)

// ValidateCommand checks agent configuration files offline.
type ValidateCommand struct{ UI cli.Ui }

func (c *ValidateCommand) Help() string {
	return trim(`
Usage: nullnet validate [options] PATH...
       nullnet validate -stacks DIR [options] [PATH...]

  Checks agent configuration files and directories (every *.hcl and *.json
  in a directory, merged in order as the agent would) and prints every
  diagnostic as file:line:col with the offending line. Exits 1 when any
  diagnostic is an error, 0 otherwise (warnings are printed).

  With -stacks, also checks every *.hcl stack file in DIR as one set,
  exactly as the server does on start and on every reload. The ports a
  tcp service may not take come from the agent configuration PATHs when
  given (proxy.http_addr, ports.http, ports.grpc), else from the defaults.

Options:

  -stacks=<dir>
     A stacks directory (server.stacks_dir) to validate.

  -quiet
     Print nothing on success.
`)
}

func (c *ValidateCommand) Synopsis() string { return "Validates agent configuration files" }

func (c *ValidateCommand) Run(args []string) int {
	var quiet bool
	var stacksDir string
	fs := newFlagSet("validate")
	fs.BoolVar(&quiet, "quiet", false, "")
	fs.StringVar(&stacksDir, "stacks", "", "")
	if err := fs.Parse(args); err != nil {
		c.UI.Error(fmt.Sprintf("%v\n\n%s", err, c.Help()))
		return 2
	}
	if fs.NArg() == 0 && stacksDir == "" {
		c.UI.Error("validate needs at least one PATH or -stacks DIR.\n\n" + c.Help())
		return 2
	}
	if fs.NArg() == 0 {
		return c.validateStacks(stacksDir, config.Default(), quiet)
	}
	var sources []config.Source
	for _, p := range fs.Args() {
		st, err := os.Stat(p)
		if err != nil {
			c.UI.Error(fmt.Sprintf("%s: %v", p, err))
			return 1
		}
		sources = append(sources, config.Source{Path: p, IsDir: st.IsDir()})
	}
	res := config.Load(sources, false)
	code := c.report(res.Files, res.Diags, quiet, fmt.Sprintf("%d configuration file(s)", len(res.Paths)))
	if stacksDir == "" {
		return code
	}
	return max(code, c.validateStacks(stacksDir, res.Config, quiet))
}

// validateStacks runs the server's stack validation on dir, with the reserved ports of cfg.
func (c *ValidateCommand) validateStacks(dir string, cfg *config.Config, quiet bool) int {
	set := config.LoadStacks(dir, config.StackRulesFor(cfg))
	return c.report(set.Files, set.Diags, quiet,
		fmt.Sprintf("%d stack file(s) in %s (%d stack(s), %d service(s))", len(set.Paths), dir, len(set.Stacks), len(set.Services())))
}

// report prints diagnostics and returns the exit code.
func (c *ValidateCommand) report(files map[string]*hcl.File, diags hcl.Diagnostics, quiet bool, what string) int {
	if len(diags) > 0 {
		var b strings.Builder
		_ = config.WriteDiagnostics(&b, files, diags)
		out := strings.TrimRight(b.String(), "\n")
		if diags.HasErrors() {
			c.UI.Error(out)
			c.UI.Error(fmt.Sprintf("%d error(s) in %s", countErrors(diags), what))
			return 1
		}
		c.UI.Warn(out)
	}
	if !quiet {
		c.UI.Output(fmt.Sprintf("%s: valid", what))
	}
	return 0
}

func countErrors(diags hcl.Diagnostics) int {
	n := 0
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			n++
		}
	}
	return n
}

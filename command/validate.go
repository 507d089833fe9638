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

  Checks agent configuration files and directories (every *.hcl and *.json
  in a directory, merged in order as the agent would) and prints every
  diagnostic as file:line:col with the offending line. Exits 1 when any
  diagnostic is an error, 0 otherwise (warnings are printed).

Options:

  -quiet
     Print nothing on success.
`)
}

func (c *ValidateCommand) Synopsis() string { return "Validates agent configuration files" }

func (c *ValidateCommand) Run(args []string) int {
	var quiet bool
	fs := newFlagSet("validate")
	fs.BoolVar(&quiet, "quiet", false, "")
	if err := fs.Parse(args); err != nil {
		c.UI.Error(fmt.Sprintf("%v\n\n%s", err, c.Help()))
		return 2
	}
	if fs.NArg() == 0 {
		c.UI.Error("validate needs at least one PATH.\n\n" + c.Help())
		return 2
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
	return c.report(res.Files, res.Diags, quiet, fmt.Sprintf("%d configuration file(s)", len(res.Paths)))
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

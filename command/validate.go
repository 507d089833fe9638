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
  given (proxy.http_addr, proxy.https_addr, ports.http, ports.grpc), else
  from the defaults.

  A PATH that is a stack file (it holds top-level stack blocks), or a
  directory of only stack files, is checked as stacks, and says so.

  Only regular files of at most 4 MiB are read: a FIFO, socket or device
  is an error at once, never a wait.

Options:

  -stacks=<dir>
     A stacks directory (server.stacks_dir) to validate.

  -quiet
     Print nothing on success.
`)
}

func (c *ValidateCommand) Synopsis() string { return "Validates agent configuration and stack files" }

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
	// A PATH may be a stack file, or a directory of them, given without -stacks: recognise it by
	// its top-level `stack` blocks and check it as stacks rather than report "Unsupported block
	// type" for each.
	var sources []config.Source
	var stackFiles []config.StackFile
	var stackDirs []string
	for _, p := range fs.Args() {
		st, err := os.Stat(p)
		if err != nil {
			c.UI.Error(fmt.Sprintf("%s: %v", p, err))
			return 1
		}
		switch {
		case st.IsDir():
			if holdsStacks(p) {
				stackDirs = append(stackDirs, p)
				continue
			}
		case st.Mode().IsRegular():
			if src, err := config.ReadRegularFile(p); err == nil && config.IsStackFile(p, src) {
				stackFiles = append(stackFiles, config.StackFile{Path: p, Bytes: src})
				continue
			}
		default:
			_, err := config.ReadRegularFile(p) // says what it is, without blocking on it
			c.UI.Error(err.Error())
			return 1
		}
		sources = append(sources, config.Source{Path: p, IsDir: st.IsDir()})
	}
	cfg, code := config.Default(), 0
	if len(sources) > 0 {
		res := config.Load(sources, false)
		code = c.report(res.Files, res.Diags, quiet, fmt.Sprintf("%d configuration file(s)", len(res.Paths)))
		cfg = res.Config
	}
	if len(stackFiles) > 0 {
		if !quiet {
			c.UI.Output("==> Checking as stack files (they hold `stack` blocks); -stacks DIR checks a whole " +
				"stacks directory as one set, as the server does.")
		}
		set := config.ParseStacks(stackFiles, config.StackRulesFor(cfg))
		code = max(code, c.report(set.Files, set.Diags, quiet, fmt.Sprintf("%d stack file(s) (%d stack(s), %d service(s))",
			len(set.Paths), len(set.Stacks), len(set.Services()))))
	}
	for _, d := range stackDirs {
		if !quiet {
			c.UI.Output(fmt.Sprintf("==> Checking %s as a stacks directory (its files hold `stack` blocks), as -stacks %s does.", d, d))
		}
		code = max(code, c.validateStacks(d, cfg, quiet))
	}
	if stacksDir != "" {
		code = max(code, c.validateStacks(stacksDir, cfg, quiet))
	}
	return code
}

// holdsStacks reports whether dir's *.hcl files are all stack files (and there is one).
func holdsStacks(dir string) bool {
	files, err := config.ReadStackFiles(dir)
	if err != nil || len(files) == 0 {
		return false
	}
	for _, f := range files {
		if !config.IsStackFile(f.Path, f.Bytes) {
			return false
		}
	}
	return true
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

package command

import (
	"flag"
	"io"
	"strings"

	"github.com/nullnet/nullnet/config"
)

// sourcesFlag collects -config-file and -config-dir into one ordered list, because later
// sources override earlier ones in the order given.
type sourcesFlag struct {
	list  *[]config.Source
	isDir bool
}

func (f sourcesFlag) String() string { return "" }

func (f sourcesFlag) Set(v string) error {
	*f.list = append(*f.list, config.Source{Path: v, IsDir: f.isDir})
	return nil
}

// newFlagSet returns a flag set that reports errors through the caller (exit code 2).
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// configFlags adds -config-file and -config-dir to fs.
func configFlags(fs *flag.FlagSet, list *[]config.Source) {
	fs.Var(sourcesFlag{list: list}, "config-file", "")
	fs.Var(sourcesFlag{list: list, isDir: true}, "config-dir", "")
}

const configFlagsHelp = `
  -config-file=<path>
     A configuration file (HCL, or JSON with a .json suffix). Repeatable;
     later files override earlier ones and blocks merge.

  -config-dir=<path>
     A directory of configuration files: every *.hcl and *.json file in it,
     in lexical order. Repeatable, and ordered with -config-file as given.`

func trim(s string) string { return strings.TrimSpace(s) }

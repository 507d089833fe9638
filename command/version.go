package command

import (
	"strings"

	"github.com/hashicorp/cli"
	"github.com/nullnet/nullnet/agent/version"
)

// VersionCommand prints the version.
type VersionCommand struct{ UI cli.Ui }

func (c *VersionCommand) Help() string {
	return strings.TrimSpace(`
Usage: nullnet version

  Prints the version of this nullnet binary.
`)
}

func (c *VersionCommand) Synopsis() string { return "Prints the nullnet version" }

func (c *VersionCommand) Run(args []string) int {
	if len(args) > 0 {
		c.UI.Error("This command takes no arguments.\n\n" + c.Help())
		return 2
	}
	c.UI.Output(version.String())
	return 0
}

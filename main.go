// Command nullnet exposes services on many hosts to the outside world on demand.
package main

import (
	"os"

	"github.com/nullnet/nullnet/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}

// Command render turns the Markdown documentation under website/ into a static HTML site:
// every .md page becomes .html with its .md links rewritten, a sidebar nav, and the assets and
// linked repository files copied beside it. It refuses to write a site with a broken internal
// link. Run it as `make website` (go run ./website/render -out website/public).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/nullnet/nullnet/website/site"
)

func main() {
	src := flag.String("src", "website", "the documentation root (the website directory)")
	out := flag.String("out", "website/public", "where to write the HTML site")
	flag.Parse()
	if err := run(*src, *out); err != nil {
		fmt.Fprintf(os.Stderr, "render: %v\n", err)
		os.Exit(1)
	}
}

func run(src, out string) error {
	s, err := site.Load(src)
	if err != nil {
		return err
	}
	if err := s.Render(out); err != nil {
		return err
	}
	fmt.Printf("rendered %d pages to %s\n", len(s.Pages), out)
	return nil
}

package command

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/cli"
)

// table is the aligned-columns output of the listing commands: a header, then one row per
// entry, printed in one UI call.
type table struct {
	b  strings.Builder
	tw *tabwriter.Writer
}

// newTable starts a table with header: tab-separated column names.
func newTable(header string) *table {
	t := &table{}
	t.tw = tabwriter.NewWriter(&t.b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(t.tw, header)
	return t
}

// row adds one row; format separates columns with tabs and has no trailing newline.
func (t *table) row(format string, args ...any) { fmt.Fprintf(t.tw, format+"\n", args...) }

// output aligns the columns and prints them.
func (t *table) output(ui cli.Ui) {
	_ = t.tw.Flush()
	ui.Output(strings.TrimRight(t.b.String(), "\n"))
}

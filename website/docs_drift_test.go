package website_test

import (
	"bytes"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/nullnet/nullnet/agent/events"
	"github.com/nullnet/nullnet/command"
)

// The drift tests compare what the docs show with what the program does, for the classes of
// statement that went stale before: help output pasted into the CLI pages, and the fields of
// each event kind.

var textBlockRE = regexp.MustCompile("(?s)```text\n(.*?)```")

// helpOutput runs the real CLI with args and returns what it printed.
func helpOutput(args ...string) string {
	var out, errOut bytes.Buffer
	command.RunIO(args, &out, &errOut)
	return out.String() + errOut.String()
}

func trimLines(s string) []string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
	}
	return lines
}

// TestDocsCLIHelpSamples: in every page, a ```text block that starts with `$ nullnet … -h` must
// show exactly what that command prints, and one that starts with `Usage: nullnet <command>` must
// be the beginning of that command's real help. The CLI index must show `nullnet -h`, and each
// command page its usage, so that the check cannot lapse by deleting the sample.
func TestDocsCLIHelpSamples(t *testing.T) {
	ws := loadSite(t)
	commands := command.Commands(nil)
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	// Longest first, so "sessions delete" wins over "sessions".
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })

	sawTopHelp := false
	usagePages := map[string]bool{}
	for src, p := range ws.Pages {
		for _, m := range textBlockRE.FindAllStringSubmatch(string(p.Source), -1) {
			lines := trimLines(m[1])
			first := lines[0]
			switch {
			case strings.HasPrefix(first, "$ nullnet ") && (strings.HasSuffix(first, " -h") || strings.HasSuffix(first, " --help") || strings.HasSuffix(first, " -help")):
				args := strings.Fields(strings.TrimPrefix(first, "$ nullnet "))
				if len(args) == 1 {
					sawTopHelp = true
				}
				want := trimLines(helpOutput(args...))
				if got := lines[1:]; strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("website/%s: the sample of `%s` differs from the program's output:\n--- docs\n%s\n--- program\n%s",
						src, strings.TrimPrefix(first, "$ "), strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
			case strings.HasPrefix(first, "Usage: nullnet "):
				rest := strings.TrimPrefix(first, "Usage: nullnet ")
				name := ""
				for _, n := range names {
					if rest == n || strings.HasPrefix(rest, n+" ") {
						name = n
						break
					}
				}
				if name == "" {
					t.Errorf("website/%s: usage sample %q names no command", src, first)
					continue
				}
				usagePages[src] = true
				cmd, _ := commands[name]()
				want := trimLines(cmd.Help())
				if len(lines) > len(want) || strings.Join(lines, "\n") != strings.Join(want[:len(lines)], "\n") {
					n := min(len(want), len(lines)+1)
					t.Errorf("website/%s: usage sample differs from `nullnet %s -h`:\n--- docs\n%s\n--- program\n%s",
						src, name, strings.Join(lines, "\n"), strings.Join(want[:n], "\n"))
				}
			}
		}
	}
	if !sawTopHelp {
		t.Error("website/docs/cli/index.md no longer shows `$ nullnet -h`; keep the sample (it is checked)")
	}
	for n := range commands {
		if strings.Contains(n, " ") || n == "tls" {
			continue // subcommands share their parent's page; tls lists its subcommands instead
		}
		if !usagePages["docs/cli/"+n+".md"] {
			t.Errorf("website/docs/cli/%s.md has no ```text block starting with `Usage: nullnet %s`", n, n)
		}
	}
}

var (
	eventRowRE = regexp.MustCompile("^\\| `([a-z_]+)` \\|([^|]*)\\|([^|]*)\\|(.*)\\|$")
	codeSpanRE = regexp.MustCompile("`([^`]+)`")
)

// TestDocsEventFields: each kind's row in events.md lists exactly the fields of its spec in
// agent/events/kinds.go (which TestEmitSitesMatchSpecs checks against every emit site), and a
// reserved kind says so.
func TestDocsEventFields(t *testing.T) {
	ws := loadSite(t)
	rows := map[string][2]string{}
	for _, line := range strings.Split(string(page(t, ws, "docs/events.md").Source), "\n") {
		if m := eventRowRE.FindStringSubmatch(line); m != nil {
			rows[m[1]] = [2]string{m[3], m[4]}
		}
	}
	known := map[string]bool{}
	for _, s := range events.Specs() {
		known[s.Kind] = true
		row, ok := rows[s.Kind]
		if !ok {
			t.Errorf("events.md has no table row for %s", s.Kind)
			continue
		}
		var documented []string
		for _, m := range codeSpanRE.FindAllStringSubmatch(row[0], -1) {
			documented = append(documented, m[1])
		}
		sort.Strings(documented)
		want := append([]string(nil), s.Fields...)
		sort.Strings(want)
		if strings.Join(documented, ",") != strings.Join(want, ",") {
			t.Errorf("events.md %s: fields %v, the program emits %v", s.Kind, documented, want)
		}
		if s.Reserved != strings.HasPrefix(strings.TrimSpace(row[1]), "Reserved") {
			t.Errorf("events.md %s: Reserved in kinds.go is %v; the row's meaning must start with \"Reserved\" exactly when it is", s.Kind, s.Reserved)
		}
	}
	for k := range rows {
		if !known[k] {
			t.Errorf("events.md documents %s, which agent/events/kinds.go does not declare", k)
		}
	}
}

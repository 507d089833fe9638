package command

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/cli"
	"github.com/nullnet/nullnet/agent/events"
)

// EventsCommand prints the server's event ring, optionally following it.
type EventsCommand struct{ UI cli.Ui }

func (c *EventsCommand) Help() string {
	return trim(`
Usage: nullnet events [options]

  Prints the events a server keeps (GET /v1/events): node connections,
  sessions created and torn down (with reason and setup latency), setup
  failures, replica changes, configuration reloads and what client and
  proxy agents reported. Oldest first. See website/docs/events.md for
  every kind and its fields.

Options:

  -follow
     Keep running and print new events as they arrive (a blocking query
     per batch, as Consul's watches do). Stop with Ctrl-C.

  -json
     Print one JSON object per line (the API's event objects).

  -kind=<kind>
     Only events of this kind (e.g. session_torn_down). An unknown kind is
     an error (exit 2) that lists the valid ones.

  -severity=<info|warning|error>
     Only events of this severity.
` + httpFlagsHelp)
}

func (c *EventsCommand) Synopsis() string { return "Prints the server's events" }

// apiEvent mirrors one entry of GET /v1/events.
type apiEvent struct {
	Index    uint64            `json:"index"`
	Time     time.Time         `json:"time"`
	Kind     string            `json:"kind"`
	Severity string            `json:"severity"`
	Node     string            `json:"node,omitempty"`
	Message  string            `json:"message,omitempty"`
	Fields   map[string]string `json:"fields,omitempty"`
}

func (c *EventsCommand) Run(args []string) int {
	var follow, asJSON bool
	var kind, severity string
	var hf httpFlags
	fs := newFlagSet("events")
	fs.BoolVar(&follow, "follow", false, "")
	fs.BoolVar(&asJSON, "json", false, "")
	fs.StringVar(&kind, "kind", "", "")
	fs.StringVar(&severity, "severity", "", "")
	hf.register(fs)
	client, code := parseAPICommand(c.UI, fs, &hf, args, c.Help())
	if code != 0 {
		return code
	}
	if kind != "" && !events.Known(kind) {
		c.UI.Error(fmt.Sprintf("unknown -kind %q; valid kinds:\n  %s", kind, strings.Join(events.Kinds(), "\n  ")))
		return 2
	}
	switch severity {
	case "", "info", "warning", "error":
	default:
		c.UI.Error(fmt.Sprintf("invalid -severity %q: want info, warning or error", severity))
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	q := url.Values{}
	if kind != "" {
		q.Set("kind", kind)
	}
	if severity != "" {
		q.Set("severity", severity)
	}
	var index uint64
	failures := 0
	for {
		if index > 0 {
			q.Set("index", strconv.FormatUint(index, 10))
			q.Set("wait", "5m")
		}
		var evs []apiEvent
		reqCtx, cancel := context.WithTimeout(ctx, requestTimeout+6*time.Minute)
		next, err := client.get(reqCtx, "/v1/events", q, &evs)
		cancel()
		if ctx.Err() != nil {
			return 0
		}
		if err != nil {
			if !follow {
				c.UI.Error(err.Error())
				return 1
			}
			failures++
			c.UI.Warn(fmt.Sprintf("%v (retrying)", err))
			select {
			case <-ctx.Done():
				return 0
			case <-time.After(min(time.Duration(failures)*time.Second, 10*time.Second)):
			}
			continue
		}
		failures = 0
		sort.Slice(evs, func(i, j int) bool { return evs[i].Index < evs[j].Index })
		for _, e := range evs {
			c.UI.Output(formatEvent(e, asJSON))
		}
		if !follow {
			return 0
		}
		if next < index { // the server restarted: its ring starts over
			next = 0
		}
		index = max(next, 1)
	}
}

// formatEvent renders one event as a line: time, severity, kind, node, message, fields (sorted).
func formatEvent(e apiEvent, asJSON bool) string {
	if asJSON {
		b, _ := json.Marshal(e)
		return string(b)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s [%-7s] %s", e.Time.Local().Format("2006-01-02T15:04:05.000Z07:00"), strings.ToUpper(e.Severity), e.Kind)
	if e.Node != "" {
		fmt.Fprintf(&b, " node=%s", e.Node)
	}
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%s", k, strconv.Quote(e.Fields[k]))
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	return b.String()
}

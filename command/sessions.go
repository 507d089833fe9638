package command

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/cli"
)

// SessionsCommand lists the server's sessions.
type SessionsCommand struct{ UI cli.Ui }

func (c *SessionsCommand) Help() string {
	return trim(`
Usage: nullnet sessions [options]
       nullnet sessions delete [options] ID

  Lists the sessions a server holds (GET /v1/sessions): one per service,
  outside client IP and proxy node, with its replica, net id, upstream,
  open uses and idle state. Sessions being torn down are listed until both
  nodes confirmed the teardown. "nullnet sessions delete ID" forces a
  teardown (see "nullnet sessions delete -h").

Options:

  -json
     Print the API's JSON array.

  -service=<name>
     Only sessions of this service.
` + httpFlagsHelp)
}

func (c *SessionsCommand) Synopsis() string { return "Lists or deletes sessions" }

// apiSession mirrors one entry of GET /v1/sessions.
type apiSession struct {
	ID        string `json:"id"`
	Service   string `json:"service"`
	ClientIP  string `json:"client_ip"`
	ProxyNode string `json:"proxy_node"`
	NetID     uint32 `json:"net_id"`
	Replica   struct {
		ID   string `json:"id"`
		Node string `json:"node"`
	} `json:"replica"`
	UpstreamIP     string     `json:"upstream_ip"`
	UpstreamPort   int        `json:"upstream_port"`
	State          string     `json:"state"`
	Created        time.Time  `json:"created"`
	SetupLatencyMS float64    `json:"setup_latency_ms"`
	Uses           int        `json:"uses"`
	IdleSince      *time.Time `json:"idle_since"`
	TimeoutSecs    float64    `json:"timeout_secs"`
	Reason         string     `json:"reason"`
}

func (c *SessionsCommand) Run(args []string) int {
	var asJSON bool
	var service string
	var hf httpFlags
	fs := newFlagSet("sessions")
	fs.BoolVar(&asJSON, "json", false, "")
	fs.StringVar(&service, "service", "", "")
	hf.register(fs)
	client, code := parseAPICommand(c.UI, fs, &hf, args, c.Help())
	if code != 0 {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	q := url.Values{}
	if service != "" {
		q.Set("service", service)
	}
	if asJSON {
		return client.printRaw(ctx, c.UI, "/v1/sessions", q)
	}
	var list []apiSession
	if _, err := client.get(ctx, "/v1/sessions", q, &list); err != nil {
		c.UI.Error(err.Error())
		return 1
	}
	if len(list) == 0 {
		c.UI.Output("No sessions.")
		return 0
	}
	tw := newTable("ID\tSERVICE\tCLIENT\tPROXY NODE\tSERVICE NODE\tNET ID\tUPSTREAM\tSTATE\tUSES\tIDLE\tSETUP")
	now := time.Now()
	for _, s := range list {
		netID, idle := "-", "-"
		if s.NetID != 0 {
			netID = fmt.Sprint(s.NetID)
		}
		if s.IdleSince != nil {
			idle = now.Sub(*s.IdleSince).Round(time.Second).String() + "/" + timeoutText(s.TimeoutSecs)
		}
		state := s.State
		if s.Reason != "" {
			state += " (" + s.Reason + ")"
		}
		tw.row("%s\t%s\t%s\t%s\t%s\t%s\t%s:%d\t%s\t%d\t%s\t%s", s.ID[:8], s.Service, s.ClientIP, s.ProxyNode,
			s.Replica.Node, netID, s.UpstreamIP, s.UpstreamPort, state, s.Uses, idle, fmt.Sprintf("%.1fms", s.SetupLatencyMS))
	}
	tw.output(c.UI)
	return 0
}

func timeoutText(secs float64) string {
	if secs == 0 {
		return "never"
	}
	return (time.Duration(secs * float64(time.Second))).String()
}

// SessionsDeleteCommand forces the teardown of one session.
type SessionsDeleteCommand struct{ UI cli.Ui }

func (c *SessionsDeleteCommand) Help() string {
	return trim(`
Usage: nullnet sessions delete [options] ID

  Forces the teardown of a session (DELETE /v1/sessions/ID, reason
  "forced"). ID is the full id or a unique prefix of it, as printed by
  "nullnet sessions". Both nodes remove their tunnel end; open connections
  through it break, and the client's next connection builds a new session.
` + httpFlagsHelp)
}

func (c *SessionsDeleteCommand) Synopsis() string { return "Forces the teardown of a session" }

func (c *SessionsDeleteCommand) Run(args []string) int {
	var hf httpFlags
	fs := newFlagSet("sessions delete")
	hf.register(fs)
	if err := fs.Parse(args); err != nil {
		c.UI.Error(fmt.Sprintf("%v\n\n%s", err, c.Help()))
		return 2
	}
	if fs.NArg() != 1 {
		c.UI.Error("This command takes exactly one argument: the session id.\n\n" + c.Help())
		return 2
	}
	client, err := hf.client()
	if err != nil {
		c.UI.Error(err.Error())
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	id := fs.Arg(0)
	var list []apiSession
	if _, err := client.get(ctx, "/v1/sessions", nil, &list); err != nil {
		c.UI.Error(err.Error())
		return 1
	}
	var matches []string
	for _, s := range list {
		if strings.HasPrefix(s.ID, id) && s.State != "tearing_down" {
			matches = append(matches, s.ID)
		}
	}
	switch len(matches) {
	case 0:
		c.UI.Error(fmt.Sprintf("No active session matches %q.", id))
		return 1
	case 1:
	default:
		c.UI.Error(fmt.Sprintf("%q matches %d sessions; give more of the id.", id, len(matches)))
		return 1
	}
	if err := client.delete(ctx, "/v1/sessions/"+matches[0]); err != nil {
		c.UI.Error(err.Error())
		return 1
	}
	c.UI.Output(fmt.Sprintf("Session %s is being torn down.", matches[0]))
	return 0
}

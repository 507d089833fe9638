package command

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/cli"
	"github.com/hashicorp/consul/api"

	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/server/servers"
)

// nullnet servers against the real route and a real Consul holding two server registrations
// and a leader lock.
func TestServersCommand(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	for i, name := range []string{"srv-a", "srv-b"} {
		err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: "nullnet-" + name, Name: "nullnet", Tags: []string{"server"}, Port: 7400 + i, Address: "127.0.0.1",
			Meta: map[string]string{"nullnet-node": name, "nullnet-grpc-port": fmt.Sprint(7400 + i),
				"nullnet-http-port": fmt.Sprint(4700 + i), "nullnet-version": "0.1.0"},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	key := fmt.Sprintf("nullnet-test/servers-cli-%d", time.Now().UnixNano())
	sid, _, err := c.Session().Create(&api.SessionEntry{TTL: "10s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := c.KV().Acquire(&api.KVPair{Key: key, Session: sid, Flags: api.LockFlagValue,
		Value: []byte(`{"name":"srv-b","address":"127.0.0.1:7401"}`)}, nil); err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/servers", servers.Handler(c, key))
	front := httptest.NewServer(mux)
	defer front.Close()

	ui := cli.NewMockUi()
	if code := (&ServersCommand{UI: ui}).Run([]string{"-http-addr=" + front.URL}); code != 0 {
		t.Fatalf("exit %d: %s", code, ui.ErrorWriter.String())
	}
	out := ui.OutputWriter.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[1], "srv-a") ||
		strings.Contains(lines[1], "leader") || !strings.HasSuffix(lines[2], "leader") || !strings.Contains(lines[2], "7401") {
		t.Fatalf("output:\n%s", out)
	}
	ui = cli.NewMockUi()
	if code := (&ServersCommand{UI: ui}).Run([]string{"-http-addr=" + front.URL, "-json"}); code != 0 ||
		!strings.Contains(ui.OutputWriter.String(), `"leader": true`) {
		t.Fatalf("json: %d %s %s", code, ui.OutputWriter.String(), ui.ErrorWriter.String())
	}
}

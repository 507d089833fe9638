package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/devdemo"
	"github.com/nullnet/nullnet/config"
)

// TestDevAgentRelays runs what `make dev` runs — every role in one process, network =
// "direct", on 127.0.0.1, the demo backends the agent serves itself — against a real Consul,
// and relays TCP, UDP and HTTP through the proxy to those backends: the control channel, the
// host-service registration, the port table, the Proxy call and the three relays work together.
// The stack file is the embedded demo stack with free listen ports, so parallel runs never clash.
// It also checks that the one-process agent stores each event once.
func TestDevAgentRelays(t *testing.T) {
	srv := consultest.Start(t)
	tcpPort, udpPort := freePort(t), freeUDPPort(t)
	demo := strings.Replace(devdemo.StackFile(), "listen_port = 9000", fmt.Sprintf("listen_port = %d", tcpPort), 1)
	demo = strings.Replace(demo, "listen_port = 9053", fmt.Sprintf("listen_port = %d", udpPort), 1)
	if demo == devdemo.StackFile() {
		t.Fatal("the demo stack file no longer has listen ports 9000 and 9053; update this test")
	}
	httpProxy := freePort(t)
	cfgFile, _ := oneProcessFiles{Node: "dev-test", Consul: srv.HTTPAddr, Stack: demo,
		ProxyHTTPPort: httpProxy}.write(t, t.TempDir())
	res := config.Load([]config.Source{{Path: cfgFile}}, true) // -dev, then the file
	if res.Diags.HasErrors() {
		t.Fatal(config.FormatDiagnostics(res.Files, res.Diags))
	}
	a, err := New(res.Config, hclog.New(&hclog.LoggerOptions{Name: "dev", Level: hclog.Warn, Output: testWriter{t}}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	waitFor(t, "the node's control channel", 20*time.Second, func() bool {
		_, body := get(t, "http://"+a.HTTPAddr()+"/v1/agent/self")
		var self struct {
			Status struct {
				Client struct {
					Connected bool `json:"connected"`
				} `json:"client"`
			} `json:"status"`
		}
		return json.Unmarshal([]byte(body), &self) == nil && self.Status.Client.Connected
	})
	waitFor(t, "a TCP round trip through the proxy to the demo TCP echo", 45*time.Second, func() bool {
		return tcpEchoes(fmt.Sprintf("127.0.0.1:%d", tcpPort), 5*time.Second)
	})
	waitFor(t, "a UDP round trip through the proxy to the demo UDP echo", 45*time.Second, func() bool {
		c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", udpPort))
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("datagram")); err != nil {
			return false
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		return err == nil && string(buf[:n]) == "datagram"
	})
	var page string
	waitFor(t, "an HTTP request through the proxy to the demo HTTP service", 45*time.Second, func() bool {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/hello", httpProxy), nil)
		req.Host = devdemo.WebService
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		page = string(b)
		return resp.StatusCode == 200 && strings.Contains(page, "nullnet demo HTTP service")
	})
	if !strings.Contains(page, "GET /hello Host: web.localhost") || !strings.Contains(page, "X-Forwarded-For: 127.0.0.1") {
		t.Errorf("the demo page did not see the proxied request: %q", page)
	}

	// Each event once: the node and proxy roles write into this process's server ring and do
	// not report the same events to it again over gRPC.
	time.Sleep(500 * time.Millisecond) // a forwarded copy arrived within milliseconds
	_, body := get(t, "http://"+a.HTTPAddr()+"/v1/events")
	var evs []struct {
		Kind   string            `json:"kind"`
		Node   string            `json:"node"`
		Fields map[string]string `json:"fields"`
	}
	if err := json.Unmarshal([]byte(body), &evs); err != nil {
		t.Fatalf("events: %v: %s", err, body)
	}
	seen := map[string]int{}
	for _, e := range evs {
		switch e.Kind {
		case "listener_opened", "control_channel_established", "host_service_registered":
			key := fmt.Sprintf("%s %s %v", e.Kind, e.Node, e.Fields)
			seen[key]++
			if seen[key] == 2 {
				t.Errorf("event stored twice: %s", key)
			}
		}
	}
	if len(seen) == 0 {
		t.Errorf("no listener_opened, control_channel_established or host_service_registered event: %s", body)
	}
}

// tcpEchoes reports whether "ping" sent over a new TCP connection to addr comes back within d.
func tcpEchoes(addr string, d time.Duration) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("ping")); err != nil {
		return false
	}
	buf := make([]byte, 4)
	_, err = io.ReadFull(c, buf)
	return err == nil && string(buf) == "ping"
}

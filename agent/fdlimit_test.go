package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/config"
)

func TestPlanBudget(t *testing.T) {
	for _, tc := range []struct {
		soft              uint64
		udp, http         int // configured
		wantUDP, wantHTTP int
		wantReserved      int
	}{
		{20000, 200000, 1024, 18464, 1024, 1536}, // the host: 200,000 sessions cannot fit
		{1024, 200000, 1024, 384, 128, 640},      // a tiny limit: the API keeps 1/8
		{100, 200000, 1024, 1, 32, 544},          // below the reserve: one session, a usable API
		{1 << 20, 200000, 1024, 200000, 1024, 1536},
		{20000, 100, 50, 100, 50, 562}, // what fits is not changed
	} {
		t.Run(fmt.Sprint(tc.soft), func(t *testing.T) {
			c := config.Default()
			c.Proxy.UDPMaxSessions, c.Limits.HTTPMaxConns = tc.udp, tc.http
			b := planBudget(tc.soft, c)
			if b.UDPMaxSessions != tc.wantUDP || b.HTTPMaxConns != tc.wantHTTP || b.Reserved != tc.wantReserved {
				t.Fatalf("udp %d http %d reserved %d, want %d %d %d", b.UDPMaxSessions, b.HTTPMaxConns, b.Reserved,
					tc.wantUDP, tc.wantHTTP, tc.wantReserved)
			}
			eff := b.apply(c)
			if eff.Proxy.UDPMaxSessions != tc.wantUDP || eff.Limits.HTTPMaxConns != tc.wantHTTP {
				t.Fatalf("applied: %d %d", eff.Proxy.UDPMaxSessions, eff.Limits.HTTPMaxConns)
			}
			if c.Proxy.UDPMaxSessions != tc.udp {
				t.Fatal("apply changed its argument")
			}
			// A reload asking for more is capped by the same budget.
			c.Proxy.UDPMaxSessions = 1 << 30
			if got := b.apply(c).Proxy.UDPMaxSessions; got != b.udpCap {
				t.Fatalf("reload: %d, want the cap %d", got, b.udpCap)
			}
		})
	}
}

// TestOpenFileLimitCapsUDPSessions: started with a soft limit of 1024 under a hard limit of
// 4096, the agent raises the soft limit to 4096, warns once that udp_max_sessions = 200000
// does not fit and runs with the capped value, which /v1/agent/self shows.
func TestOpenFileLimitCapsUDPSessions(t *testing.T) {
	// The limits are lowered in a child process: an unprivileged hard limit cannot be raised
	// back, and the other tests of this binary must not run under it.
	if os.Getenv("NULLNET_FDLIMIT_CHILD") != "1" {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestOpenFileLimitCapsUDPSessions$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "NULLNET_FDLIMIT_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestOpenFileLimitCapsUDPSessions") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: 1024, Max: 4096}); err != nil {
		t.Fatalf("lowering the open-file limit: %v", err)
	}

	srv := consultest.Start(t)
	body := fmt.Sprintf("proxy {\n  enabled = true\n  servers = [\"127.0.0.1:%d\"]\n  http_addr = \"127.0.0.1:%d\"\n  https_addr = \"127.0.0.1:0\"\n}\n",
		freePort(t), freePort(t))
	cfg := testConfig(t, srv.HTTPAddr, body)
	cfg.Server.Enabled = false
	var logs syncBuffer
	a, err := New(cfg, hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Info, Output: &logs}))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	defer func() {
		cancel()
		<-done
		if t.Failed() {
			t.Log(logs.String())
		}
	}()

	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	if lim.Cur != 4096 {
		t.Fatalf("soft limit %d after start, want the hard limit 4096", lim.Cur)
	}
	code, text := get(t, "http://"+a.HTTPAddr()+"/v1/agent/self")
	if code != 200 {
		t.Fatalf("self: %d %s", code, text)
	}
	var self struct {
		Config config.Config `json:"config"`
		Status struct {
			Limits map[string]int `json:"limits"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(text), &self); err != nil {
		t.Fatal(err)
	}
	want := 4096 - 512 - 512 // the reserve and the API's share (1/8 of 4096)
	if got := self.Config.Proxy.UDPMaxSessions; got != want {
		t.Fatalf("effective udp_max_sessions %d, want %d", got, want)
	}
	l := self.Status.Limits
	if l["open_files"] != 4096 || l["open_files_soft_at_start"] != 1024 || l["udp_max_sessions_configured"] != 200000 ||
		l["udp_max_sessions"] != want || l["http_max_conns"] != 512 {
		t.Fatalf("status.limits = %v", l)
	}
	if n := strings.Count(logs.String(), "udp_max_sessions does not fit the open-file limit"); n != 1 {
		t.Fatalf("%d cap warnings, want 1:\n%s", n, logs.String())
	}
	// A reload keeps the cap.
	cfg2 := *cfg
	if err := a.Reload(&cfg2); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := a.Config().Proxy.UDPMaxSessions; got != want {
		t.Fatalf("after reload udp_max_sessions %d, want %d", got, want)
	}
}

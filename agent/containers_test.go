package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul/consultest"
	"github.com/nullnet/nullnet/agent/containers/containertest"
	"github.com/nullnet/nullnet/config"
)

// TestDevAgentReachesContainerReplica runs the one-process agent (network = "direct") with a
// tcp stack service whose only replica is a labelled Docker container: the client role finds
// it through the engine API and registers it at its bridge address, and a TCP round trip
// through the proxy reaches the echo server inside the container.
func TestDevAgentReachesContainerReplica(t *testing.T) {
	env := containertest.New(t)
	srv := consultest.Start(t)
	svc := "echo-c" + env.Run + ".internal"
	listen := freePort(t)
	stack := fmt.Sprintf(`stack "ctr" {
  service %q {
    protocol    = "tcp"
    listen_port = %d
    timeout     = "30s"
  }
}
`, svc, listen)
	cfgFile, _ := oneProcessFiles{Node: "ctr-test", Consul: srv.HTTPAddr, Stack: stack}.write(t, t.TempDir())
	res := config.Load([]config.Source{{Path: cfgFile}}, true)
	if res.Diags.HasErrors() {
		t.Fatal(config.FormatDiagnostics(res.Files, res.Diags))
	}
	a, err := New(res.Config, hclog.New(&hclog.LoggerOptions{Name: "ctr", Level: hclog.Warn, Output: testWriter{t}}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	start := time.Now()
	env.Start("e2e", "nullnet.service="+svc, fmt.Sprintf("nullnet.port=%d", containertest.EchoPort), "nullnet.stack=ctr")
	waitFor(t, "a TCP round trip through the proxy to the container's echo server", 45*time.Second, func() bool {
		return tcpEchoes(fmt.Sprintf("127.0.0.1:%d", listen), 3*time.Second)
	})
	t.Logf("docker run -> first echo through the proxy: %v", time.Since(start))
}

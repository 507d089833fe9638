package command

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/cli"
	"github.com/nullnet/nullnet/agent/consul/consultest"
)

// TestAgentDevRunsAnywhere: `nullnet agent -dev` started from a directory that is not the
// repository (here an empty temporary one) loads the demo stacks built into the binary, mirrors
// them into Consul, and stops on shutdown removing the directory it wrote them to. The proxy role
// is off so the demo's fixed listen ports (9000, 9053) never clash with another run on the host.
func TestAgentDevRunsAnywhere(t *testing.T) {
	srv := consultest.Start(t)
	t.Chdir(t.TempDir())
	httpPort, grpcPort := freeTCPPort(t), freeTCPPort(t)
	os.WriteFile("override.hcl", []byte(fmt.Sprintf(`
node_name = "dev-anywhere"
ports {
  http = %d
  grpc = %d
}
consul {
  address = %q
}
proxy {
  enabled = false
}
client {
  servers = ["127.0.0.1:%d"]
}
`, httpPort, grpcPort, srv.HTTPAddr, grpcPort)), 0o644)

	shutdown := make(chan struct{})
	ui := cli.NewMockUi()
	code := make(chan int, 1)
	go func() {
		code <- (&AgentCommand{UI: ui, ShutdownCh: shutdown}).Run([]string{"-dev", "-config-file=override.hcl", "-log-level=warn"})
	}()
	base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	var stacksDir string
	deadline := time.Now().Add(30 * time.Second)
	for {
		if time.Now().After(deadline) {
			close(shutdown)
			<-code
			t.Fatalf("the demo stacks never reached Consul; output:\n%s%s", ui.OutputWriter, ui.ErrorWriter)
		}
		select {
		case c := <-code:
			t.Fatalf("agent exited with %d:\n%s%s", c, ui.OutputWriter, ui.ErrorWriter)
		default:
		}
		body := httpGet(base + "/v1/stacks")
		if strings.Contains(body, `"echo.tcp"`) && strings.Contains(body, `"echo.udp"`) && strings.Contains(body, `"web.localhost"`) {
			var self struct {
				Config struct {
					Server struct {
						StacksDir string `json:"stacks_dir"`
					} `json:"server"`
				} `json:"config"`
			}
			_ = json.Unmarshal([]byte(httpGet(base+"/v1/agent/self")), &self)
			stacksDir = self.Config.Server.StacksDir
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if stacksDir == "" {
		t.Error("/v1/agent/self does not show the demo stacks directory")
	} else if _, err := os.Stat(filepath.Join(stacksDir, "demo.hcl")); err != nil {
		t.Errorf("demo stacks directory: %v", err)
	}
	close(shutdown)
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("agent exited with %d:\n%s", c, ui.ErrorWriter)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop within 10 s")
	}
	if _, err := os.Stat(stacksDir); stacksDir != "" && !os.IsNotExist(err) {
		t.Errorf("demo stacks directory %s left behind (%v)", stacksDir, err)
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func httpGet(url string) string {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

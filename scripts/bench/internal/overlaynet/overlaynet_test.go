package overlaynet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Build must give a tunnel that carries TCP from the proxy host to the service host, and Remove
// must leave no namespace behind.
func TestBuildCarriesTCPAndRemoves(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test builds network namespaces: run it as root (CI does)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topo, err := Build(ctx, fmt.Sprintf("t%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(topo.Remove)

	// A listener on the service-side bridge address, a client on the proxy side: python3 is on
	// every machine this runs on (iperf3 would do too, but this keeps the test small).
	srv := exec.Command("ip", "netns", "exec", topo.Service, "python3", "-c",
		`import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(("`+ServiceAddr+`",7000));s.listen();c,_=s.accept();c.sendall(b"over-vxlan");c.close()`)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Process.Kill()
	var out []byte
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err = exec.Command("ip", "netns", "exec", topo.Proxy, "python3", "-c",
			`import socket;c=socket.create_connection(("`+ServiceAddr+`",7000),timeout=2);print(c.recv(64).decode())`).CombinedOutput()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil || strings.TrimSpace(string(out)) != "over-vxlan" {
		t.Fatalf("no TCP across the tunnel: %v: %s", err, out)
	}
	_ = srv.Wait()

	topo.Remove()
	list, _ := exec.Command("ip", "netns", "list").Output()
	for _, ns := range []string{topo.Proxy, topo.Service} {
		if strings.Contains(string(list), ns) {
			t.Errorf("namespace %s survived Remove", ns)
		}
	}
}

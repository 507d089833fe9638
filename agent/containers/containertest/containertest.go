// Package containertest builds a one-file test image (a static Go TCP echo server) in the
// local Docker Engine and runs uniquely named containers from it, removing only what it
// created. Tests use the docker CLI to set up; the code under test uses the engine API.
package containertest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// EchoPort is where the image's echo server listens inside the container.
const EchoPort = 7000

// Env is one test's image and containers.
type Env struct {
	t     testing.TB
	Image string
	Run   string // unique suffix of this run's names
}

// New builds the echo server (CGO_ENABLED=0) and imports it as a one-file image; a missing
// engine fails the test with how to fix it.
func New(t testing.TB) *Env {
	t.Helper()
	if out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		t.Fatalf("no Docker Engine answers (scripts/setup says how to fix it): %v: %s", err, out)
	}
	_, self, _, _ := runtime.Caller(0)
	dir := t.TempDir()
	bin := filepath.Join(dir, "echo")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join(filepath.Dir(self), "echo")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the echo server: %v: %s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "echo", Mode: 0o755, Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	e := &Env{t: t, Run: fmt.Sprintf("%d%d", os.Getpid(), time.Now().UnixNano()%1e6)}
	e.Image = "nullnet-test-echo:" + e.Run
	imp := exec.Command("docker", "import", "-c", `CMD ["/echo"]`, "-", e.Image)
	imp.Stdin = &buf
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("docker import: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", e.Image).Run() })
	return e
}

// Docker runs the docker CLI, failing the test on an error.
func (e *Env) Docker(args ...string) string {
	e.t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Start runs a container named name-<Run> with labels ("k=v"), force-removed at the end;
// it returns the full name and the container ID.
func (e *Env) Start(name string, labels ...string) (string, string) {
	e.t.Helper()
	full := name + "-" + e.Run
	args := []string{"run", "-d", "--name", full}
	for _, l := range labels {
		args = append(args, "--label", l)
	}
	id := e.Docker(append(args, e.Image)...)
	e.t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", full).Run() })
	return full, id
}

// IP is the container's address on its network(s).
func (e *Env) IP(name string) string {
	return e.Docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)
}

package proxy

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// ownNetnsEnv names the test a child process runs inside its own network namespace.
const ownNetnsEnv = "NULLNET_TEST_OWN_NETNS"

// inOwnNetns runs the calling test again in a child process inside a network namespace of its
// own (loopback only) and reports whether the caller is that child, which then does the work:
//
//	if !inOwnNetns(t) {
//		return // the child ran the test; its result is this test's
//	}
//
// Floods from tens of thousands of source addresses would otherwise fill the host's conntrack
// table (Docker's rules keep connection tracking on in the root namespace; 132,000 entries were
// seen): another test run on the same host then gets EPERM on its own sends. A new namespace
// has no netfilter rules, so the kernel tracks nothing there, and all it creates goes with it.
func inOwnNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(ownNetnsEnv) == t.Name() {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			t.Fatalf("own network namespace: %v", err)
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			t.Fatalf("own network namespace: loopback up: %v", err)
		}
		return true
	}
	if os.Geteuid() != 0 {
		t.Fatal("this test floods from its own network namespace, which needs root (CI runs as root)")
	}
	args := []string{"-test.run", "^" + t.Name() + "$", "-test.count=1", "-test.v"}
	if d, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout", time.Until(d).String())
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), ownNetnsEnv+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	t.Logf("in its own network namespace:\n%s", out)
	if err != nil {
		t.Fatalf("%s failed in its own network namespace: %v", t.Name(), err)
	}
	return false
}

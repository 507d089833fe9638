package nft

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

const (
	crashNSEnv    = "NULLNET_TEST_NFT_CRASH_NS"
	crashTableEnv = "NULLNET_TEST_NFT_CRASH_TABLE"
	crashEntries  = 100
)

// TestLeftoversAfterKill: a process that installed 100 entries is killed with SIGKILL; the next
// Start with the same table name returns all 100 as leftovers and removes them.
func TestLeftoversAfterKill(t *testing.T) {
	if nsName := os.Getenv(crashNSEnv); nsName != "" {
		crashChild(t, nsName, os.Getenv(crashTableEnv))
		return
	}
	ns, nsName := testNS(t)
	name := "nullnet_" + randomID()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestLeftoversAfterKill$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashNSEnv+"="+nsName, crashTableEnv+"="+name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "ready" {
				ready <- true
				break
			}
		}
		ready <- false
		for sc.Scan() { // drain
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatal("the child exited before installing its entries")
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("the child did not get ready")
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no deferred cleanup runs
		t.Fatal(err)
	}
	_ = cmd.Wait()

	next := newTable(t, ns, name)
	start := time.Now()
	leftovers, err := next.Start()
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = next.Stop() })
	want := make([]Entry, crashEntries)
	for i := range want {
		want[i] = entry(i)
	}
	sortEntries(leftovers)
	sortEntries(want)
	if !slices.Equal(leftovers, want) {
		t.Fatalf("got %d leftovers, want the killed process's %d", len(leftovers), len(want))
	}
	if got, _ := next.List(); len(got) != 0 {
		t.Fatalf("%d entries after Start, want none", len(got))
	}
	t.Logf("Start after kill -9: %d leftovers read and removed in %v", len(leftovers), took)
}

func crashChild(t *testing.T, nsName, table string) {
	ns, err := netns.GetFromName(nsName)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := New(Config{Name: table, NetNS: int(ns)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Start(); err != nil {
		t.Fatal(err)
	}
	es := make([]Entry, crashEntries)
	for i := range es {
		es[i] = entry(i)
	}
	if err := tb.Add(es...); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	time.Sleep(time.Minute) // killed long before
	t.Fatal("not killed")
}

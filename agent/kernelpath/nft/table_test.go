package nft

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/overlay/overlaytest"
	"github.com/vishvananda/netns"
)

func randomID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// testNS is a fresh named namespace (removed in cleanup) and its name for `ip netns exec`.
func testNS(t *testing.T) (netns.NsHandle, string) {
	t.Helper()
	name := "nnkp-nft-" + randomID()
	return overlaytest.Namespace(t, name), name
}

func newTable(t *testing.T, ns netns.NsHandle, name string) *Table {
	t.Helper()
	tb, err := New(Config{Name: name, NetNS: int(ns)})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// nftList is the nft binary's view of the table: the test checks what the kernel holds with
// the standard tool, not with the library that wrote it.
func nftList(t *testing.T, nsName, table string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", nsName, "nft", "list", "table", "ip", table).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list table ip %s: %v\n%s", table, err, out)
	}
	return string(out)
}

const wantRule = "ct mark set ip saddr . meta l4proto . th dport map @mark4 dnat ip to ip saddr . meta l4proto . th dport map @dnat4"

func entry(i int) Entry {
	return Entry{
		Key:    Key{Client: netip.AddrFrom4([4]byte{10, 77, byte(i >> 8), byte(i)}), Proto: []Proto{TCP, UDP}[i%2], Port: uint16(1000 + i%7)},
		Target: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 99, byte(i >> 8), byte(i)}), uint16(2000+i)),
		Mark:   uint32(100 + i%5),
	}
}

func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int { return strings.Compare(a.String(), b.String()) })
}

func TestEnsureIsIdempotent(t *testing.T) {
	ns, nsName := testNS(t)
	name := "nullnet_" + randomID()
	tb := newTable(t, ns, name)
	if _, err := tb.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tb.Stop() })
	if err := tb.Add(entry(1), entry(2)); err != nil {
		t.Fatal(err)
	}
	first := nftList(t, nsName, name)
	for range 2 {
		if err := tb.Ensure(); err != nil {
			t.Fatalf("Ensure again: %v", err)
		}
	}
	again := nftList(t, nsName, name)
	if first != again {
		t.Fatalf("Ensure changed the table:\nbefore:\n%s\nafter:\n%s", first, again)
	}
	if n := strings.Count(again, "ct mark set"); n != 1 || !strings.Contains(again, wantRule) {
		t.Fatalf("want exactly one rule %q, got %d:\n%s", wantRule, n, again)
	}
	for _, want := range []string{
		"type nat hook prerouting priority dstnat; policy accept;",
		"type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
		"type ipv4_addr . inet_proto . inet_service : mark",
		"10.77.0.1 . udp . 1001 : 10.99.0.1 . 2001",
		"10.77.0.2 . tcp . 1002 : 10.99.0.2 . 2002",
		// The mark (102) is right in the kernel, but nft prints it byte-swapped: the library
		// cannot record the map's data byte order in the set's user data as nft does.
		"10.77.0.2 . tcp . 1002 : 0x66000000",
	} {
		if !strings.Contains(again, want) {
			t.Errorf("nft list lacks %q:\n%s", want, again)
		}
	}
	t.Logf("the table as nft shows it:\n%s", again)
}

func TestAddReplaceDeleteList(t *testing.T) {
	ns, _ := testNS(t)
	tb := newTable(t, ns, "nullnet_"+randomID())
	if _, err := tb.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tb.Stop() })
	a, b := entry(1), entry(2)
	if err := tb.Add(a, b); err != nil {
		t.Fatal(err)
	}
	if err := tb.Add(a); err != nil { // unchanged: no-op
		t.Fatal(err)
	}
	a2 := a
	a2.Target, a2.Mark = netip.MustParseAddrPort("10.98.0.1:7000"), 4242
	if err := tb.Add(a2); err != nil {
		t.Fatalf("replacing an entry: %v", err)
	}
	got, err := tb.List()
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{a2, b}
	sortEntries(got)
	sortEntries(want)
	if !slices.Equal(got, want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
	if err := tb.Delete(a.Key, a.Key, entry(3).Key); err != nil { // duplicate and unknown keys
		t.Fatal(err)
	}
	got, _ = tb.List()
	if !slices.Equal(got, []Entry{b}) {
		t.Fatalf("after Delete, List = %v, want %v", got, []Entry{b})
	}
	// A bad entry fails the whole call; the valid one beside it is not installed.
	bad := entry(4)
	bad.Mark = 0
	if err := tb.Add(entry(5), bad); err == nil {
		t.Fatal("Add accepted mark 0")
	}
	got, _ = tb.List()
	if len(got) != 1 {
		t.Fatalf("a failed Add installed entries: %v", got)
	}
}

// TestLeftoversAfterCrash: an instance that dies without Stop leaves its table DNATing; the next
// Start with the same name reports and removes it.
func TestLeftoversAfterCrash(t *testing.T) {
	ns, nsName := testNS(t)
	name := "nullnet_" + randomID()
	crashed := newTable(t, ns, name)
	if _, err := crashed.Start(); err != nil {
		t.Fatal(err)
	}
	var want []Entry
	for i := range 10 {
		want = append(want, entry(i))
	}
	if err := crashed.Add(want...); err != nil {
		t.Fatal(err)
	}
	// crashed is abandoned: no Stop.

	next := newTable(t, ns, name)
	leftovers, err := next.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = next.Stop() })
	sortEntries(leftovers)
	sortEntries(want)
	if !slices.Equal(leftovers, want) {
		t.Fatalf("leftovers = %v, want %v", leftovers, want)
	}
	if got, err := next.List(); err != nil || len(got) != 0 {
		t.Fatalf("after Start: %v entries (%v), want none", got, err)
	}
	if s := nftList(t, nsName, name); strings.Count(s, "ct mark set") != 1 {
		t.Fatalf("fresh table after leftovers:\n%s", s)
	}
	if err := next.Stop(); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("ip", "netns", "exec", nsName, "nft", "list", "tables").CombinedOutput()
	if strings.Contains(string(out), name) {
		t.Fatalf("Stop left the table:\n%s", out)
	}
}

func TestThousandEntriesInOneBatch(t *testing.T) {
	ns, _ := testNS(t)
	tb := newTable(t, ns, "nullnet_"+randomID())
	if _, err := tb.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tb.Stop() })
	entries := make([]Entry, 1000)
	keys := make([]Key, len(entries))
	for i := range entries {
		entries[i] = entry(i)
		keys[i] = entries[i].Key
	}
	start := time.Now()
	if err := tb.Add(entries...); err != nil {
		t.Fatal(err)
	}
	addTook := time.Since(start)
	start = time.Now()
	got, err := tb.List()
	listTook := time.Since(start)
	if err != nil || len(got) != len(entries) {
		t.Fatalf("List: %d entries (%v), want %d", len(got), err, len(entries))
	}
	start = time.Now()
	if err := tb.Delete(keys...); err != nil {
		t.Fatal(err)
	}
	delTook := time.Since(start)
	if got, _ := tb.List(); len(got) != 0 {
		t.Fatalf("after Delete: %d entries", len(got))
	}
	t.Logf("1000 entries: add %v, list %v, delete %v (one transaction each)", addTook, listTook, delTook)
	fmt.Printf("nft batch of 1000: add %v list %v delete %v\n", addTook, listTook, delTook)
	if addTook > 2*time.Second || delTook > 2*time.Second {
		t.Fatalf("1000-entry batch too slow: add %v, delete %v", addTook, delTook)
	}
}

// TestHostRulesetUntouched works in the host's own namespace, where Docker's tables are: they
// (and every other table) read the same before, during and after a full lifecycle of ours.
func TestHostRulesetUntouched(t *testing.T) {
	overlaytest.RequireRoot(t)
	before := hostRuleset(t)
	if !strings.Contains(before, "table ip nat") {
		t.Fatalf("expected Docker's \"table ip nat\" in the host rule set; got:\n%s", before)
	}
	name := "nullnet_" + randomID()
	tb, err := New(Config{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Start(); err != nil {
		t.Fatal(err)
	}
	// Documentation range addresses: nothing on this host sends from them.
	e := Entry{Key: Key{Client: netip.MustParseAddr("192.0.2.10"), Proto: TCP, Port: 9}, Target: netip.MustParseAddrPort("198.51.100.10:9"), Mark: 7}
	if err := tb.Add(e); err != nil {
		t.Fatal(err)
	}
	if during := hostRuleset(t); during != before {
		t.Errorf("other tables changed while ours existed:\nbefore:\n%s\nduring:\n%s", before, during)
	}
	if err := tb.Delete(e.Key); err != nil {
		t.Fatal(err)
	}
	if err := tb.Stop(); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("nft", "list", "tables").CombinedOutput()
	if strings.Contains(string(out), name) {
		t.Fatalf("Stop left the table in the host:\n%s", out)
	}
	if after := hostRuleset(t); after != before {
		t.Fatalf("host rule set changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// hostRuleset is `nft list ruleset` of the caller's namespace without tables named nullnet_*
// (ours, or a parallel test run's).
func hostRuleset(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v\n%s", err, out)
	}
	var keep []string
	skip := false
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "table ") {
			f := strings.Fields(line)
			skip = len(f) >= 3 && strings.HasPrefix(f[2], "nullnet_")
		}
		if !skip {
			keep = append(keep, line)
		}
	}
	return strings.TrimSpace(strings.Join(keep, "\n"))
}

// TestMoreThanMaxBatch: a call larger than one transaction can carry (EMSGSIZE at about 2,000
// entries with the default socket buffer) is split and fully applied.
func TestMoreThanMaxBatch(t *testing.T) {
	ns, _ := testNS(t)
	tb := newTable(t, ns, "nullnet_"+randomID())
	if _, err := tb.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tb.Stop() })
	n := 2*MaxBatch + 5
	entries := make([]Entry, n)
	keys := make([]Key, n)
	for i := range entries {
		entries[i] = entry(i)
		keys[i] = entries[i].Key
	}
	start := time.Now()
	if err := tb.Add(entries...); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d entries added in %v", n, time.Since(start))
	if got, err := tb.List(); err != nil || len(got) != n {
		t.Fatalf("List: %d entries (%v), want %d", len(got), err, n)
	}
	if err := tb.Delete(keys...); err != nil {
		t.Fatal(err)
	}
	if got, _ := tb.List(); len(got) != 0 {
		t.Fatalf("after Delete: %d entries", len(got))
	}
}

package edgepolicy

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

func compile(t testing.TB, s Spec) *Rules {
	t.Helper()
	r, err := Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var (
	a1 = netip.MustParseAddr("192.0.2.1")
	a2 = netip.MustParseAddr("192.0.2.2")
	a6 = netip.MustParseAddr("2001:db8::1")
)

func TestAdmitLists(t *testing.T) {
	s := NewService()
	s.SetRules(compile(t, Spec{Allow: []string{"192.0.2.0/24", "2001:db8::/32"}, Deny: []string{"192.0.2.2"}}))
	tests := []struct {
		addr netip.Addr
		want Reason
	}{
		{a1, Admitted}, {a2, Denied}, {a6, Admitted}, {netip.MustParseAddr("::ffff:192.0.2.1"), Admitted},
		{netip.MustParseAddr("198.51.100.1"), NotAllowed}, {netip.MustParseAddr("2001:db9::1"), NotAllowed},
	}
	for _, tc := range tests {
		tk, d := s.Admit(tc.addr, 1)
		if d.Reason != tc.want {
			t.Errorf("Admit(%s) = %s, want %s", tc.addr, d.Reason, tc.want)
		}
		tk.Release()
	}
	if s.Sessions() != 0 {
		t.Errorf("sessions = %d after every ticket was released", s.Sessions())
	}
	// Deny only: everyone else is in.
	s.SetRules(compile(t, Spec{Deny: []string{"192.0.2.0/24"}}))
	if _, d := s.Admit(a6, 1); d.Reason != Admitted {
		t.Errorf("deny-only list refused %s: %s", a6, d.Reason)
	}
	if _, d := s.Admit(a1, 1); d.Reason != Denied {
		t.Errorf("deny-only list: %s", d.Reason)
	}
}

func TestAdmitLimits(t *testing.T) {
	s := NewService()
	s.SetRules(compile(t, Spec{MaxConnectionsPerClient: 2, MaxSessions: 3}))
	t1, d1 := s.Admit(a1, 1)
	t2, d2 := s.Admit(a1, 1)
	_, d3 := s.Admit(a1, 1)
	if d1.Reason != Admitted || d2.Reason != Admitted || d3.Reason != ClientConnections {
		t.Fatalf("per-client: %s %s %s", d1.Reason, d2.Reason, d3.Reason)
	}
	if !d3.Report {
		t.Error("first refusal of a client not reported")
	}
	t4, d4 := s.Admit(a2, 1)
	_, d5 := s.Admit(a6, 1)
	if d4.Reason != Admitted || d5.Reason != ServiceSessions {
		t.Fatalf("max_sessions: %s %s", d4.Reason, d5.Reason)
	}
	t1.Release()
	t5, d5 := s.Admit(a6, 1)
	if d5.Reason != Admitted {
		t.Fatalf("after a release: %s", d5.Reason)
	}
	for _, tk := range []Ticket{t2, t4, t5} {
		tk.Release()
	}
	if s.Sessions() != 0 {
		t.Errorf("sessions = %d", s.Sessions())
	}
	got := s.Refused()
	if got[ClientConnections] != 1 || got[ServiceSessions] != 1 {
		t.Errorf("refused = %v", got)
	}
	// Live change: a lower limit applies to the next arrival, open tickets stay counted.
	s.SetRules(compile(t, Spec{MaxConnectionsPerClient: 1}))
	ta, _ := s.Admit(a1, 1)
	if _, d := s.Admit(a1, 1); d.Reason != ClientConnections {
		t.Errorf("after SetRules: %s", d.Reason)
	}
	ta.Release()
}

func TestAdmitRate(t *testing.T) {
	s := NewService()
	s.SetRules(compile(t, Spec{RatePerSecond: 10})) // burst 10
	now := int64(time.Second)
	n := 0
	for range 20 {
		if tk, d := s.Admit(a1, now); d.Reason == Admitted {
			n++
			tk.Release()
		} else if d.Reason != ClientRate {
			t.Fatalf("reason %s", d.Reason)
		}
	}
	if n != 10 {
		t.Errorf("burst admitted %d, want 10", n)
	}
	// Another client has its own bucket.
	if _, d := s.Admit(a2, now); d.Reason != Admitted {
		t.Errorf("second client: %s", d.Reason)
	}
	// 300 ms later: 3 tokens.
	now += int64(300 * time.Millisecond)
	n = 0
	for range 10 {
		if tk, d := s.Admit(a1, now); d.Reason == Admitted {
			n++
			tk.Release()
		}
	}
	if n != 3 {
		t.Errorf("after 300ms admitted %d, want 3", n)
	}
	// Explicit burst.
	s2 := NewService()
	s2.SetRules(compile(t, Spec{RatePerSecond: 1, Burst: 5}))
	n = 0
	for range 10 {
		if _, d := s2.Admit(a1, now); d.Reason == Admitted {
			n++
		}
	}
	if n != 5 {
		t.Errorf("burst 5 admitted %d", n)
	}
	if DefaultBurst(0.5) != 1 || DefaultBurst(20) != 20 || DefaultBurst(10.2) != 11 {
		t.Error("DefaultBurst")
	}
}

// TestClientTableBounded: a flood from more addresses than MaxClients keeps the table at its
// bound, and clients with open connections are never forgotten.
func TestClientTableBounded(t *testing.T) {
	s := newService(100)
	s.SetRules(compile(t, Spec{MaxConnectionsPerClient: 1, RatePerSecond: 1}))
	held, d := s.Admit(a1, 1)
	if d.Reason != Admitted {
		t.Fatal(d.Reason)
	}
	for i := range 10000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		tk, _ := s.Admit(a, 1)
		tk.Release()
		if n := s.Clients(); n > 100 {
			t.Fatalf("table grew to %d", n)
		}
	}
	if _, d := s.Admit(a1, 1); d.Reason != ClientConnections {
		t.Errorf("the client holding a connection was forgotten: %s", d.Reason)
	}
	held.Release()
	// Sweep drops refilled idle clients.
	s.Sweep(int64(10 * time.Second))
	if n := s.Clients(); n != 0 {
		t.Errorf("after sweep %d clients", n)
	}
	// A table full of clients with open connections admits newcomers without per-client state.
	var tks []Ticket
	for i := range 100 {
		tk, d := s.Admit(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), int64(11*time.Second))
		if d.Reason != Admitted {
			t.Fatal(d.Reason)
		}
		tks = append(tks, tk)
	}
	tk, d := s.Admit(a2, int64(11*time.Second))
	if d.Reason != Admitted {
		t.Errorf("newcomer with a full table: %s", d.Reason)
	}
	tk.Release()
	for _, tk := range tks {
		tk.Release()
	}
	if s.Sessions() != 0 {
		t.Errorf("sessions %d", s.Sessions())
	}
}

func TestReportOncePerMinute(t *testing.T) {
	s := NewService()
	s.SetRules(compile(t, Spec{Deny: []string{"0.0.0.0/0"}}))
	now := int64(time.Hour)
	reports := 0
	for i := range 1000 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i % 200 >> 8), byte(i % 200)})
		if _, d := s.Admit(a, now); d.Report {
			reports++
		}
	}
	if reports != MaxReportedClients {
		t.Errorf("reports = %d, want %d", reports, MaxReportedClients)
	}
	if _, ok := s.Flush(now + int64(time.Second)); ok {
		t.Error("window flushed early")
	}
	sum, ok := s.Flush(now + int64(ReportWindow))
	if !ok || sum.Suppressed != 1000-MaxReportedClients || sum.MoreClients != 200-MaxReportedClients {
		t.Errorf("summary %+v %v", sum, ok)
	}
	if _, d := s.Admit(a1, now+int64(ReportWindow)); !d.Report {
		t.Error("a new window does not report again")
	}
}

func TestCompileErrors(t *testing.T) {
	for _, s := range []Spec{{Allow: []string{"nope"}}, {Deny: []string{"10.0.0.1/8"}}, {RatePerSecond: -1}} {
		if _, err := Compile(s); err == nil {
			t.Errorf("Compile(%+v) succeeded", s)
		}
	}
}

// BenchmarkAdmit: the per-connection cost (Admit and Release) with an allow-list of 1,000
// CIDRs, alone and with per-client limits.
func BenchmarkAdmit(b *testing.B) {
	allow := make([]string, 0, 1000)
	for i := range 999 {
		allow = append(allow, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 7), byte(i << 1), 0}), 24).String())
	}
	allow = append(allow, "192.0.2.0/24")
	for _, tc := range []struct {
		name string
		spec Spec
	}{
		{"allow1000", Spec{Allow: allow}},
		{"allow1000+limits", Spec{Allow: allow, MaxConnectionsPerClient: 100, RatePerSecond: 1e9, MaxSessions: 1 << 20}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := NewService()
			s.SetRules(compile(b, tc.spec))
			now := time.Now().UnixNano()
			for b.Loop() {
				tk, d := s.Admit(a1, now)
				if d.Reason != Admitted {
					b.Fatal(d.Reason)
				}
				tk.Release()
			}
		})
	}
}

// TestConcurrent: admissions, releases, rule changes and sweeps at once (run with -race) leave
// exact counts.
func TestConcurrent(t *testing.T) {
	s := newService(64)
	s.SetRules(compile(t, Spec{MaxConnectionsPerClient: 3, RatePerSecond: 1e6, MaxSessions: 100}))
	done := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			s.Sweep(time.Now().UnixNano())
			s.SetRules(compile(t, Spec{MaxConnectionsPerClient: 1 + i%3, RatePerSecond: 1e6, MaxSessions: 100}))
			_, _ = s.Flush(time.Now().UnixNano())
		}
	}()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var held []Ticket
			for i := range 5000 {
				a := netip.AddrFrom4([4]byte{10, 0, byte(g), byte(i % 100)})
				if tk, d := s.Admit(a, time.Now().UnixNano()); d.Reason == Admitted {
					held = append(held, tk)
				}
				if len(held) > 4 {
					held[0].Release()
					held = held[1:]
				}
			}
			for _, tk := range held {
				tk.Release()
			}
		}()
	}
	wg.Wait()
	close(done)
	if n := s.Sessions(); n != 0 {
		t.Errorf("sessions = %d", n)
	}
	if n := s.Clients(); n > 64 {
		t.Errorf("clients = %d, bound 64", n)
	}
}

func TestBucket(t *testing.T) {
	const sec = int64(time.Second)
	var b Bucket
	start := int64(1000 * sec)
	b.Refill(start, 10, 10)
	if b.Tokens != 10 {
		t.Fatalf("a new bucket starts full: %v", b.Tokens)
	}
	b.Tokens = 0
	for _, c := range []struct {
		at   int64
		want float64
	}{
		{start + sec/10, 1},   // 10/s: one token per 100 ms
		{start + sec/10, 1},   // the same instant adds nothing
		{start - sec, 1},      // a clock step back adds nothing
		{start + sec, 10},     // capped at burst
		{start + 100*sec, 10}, // still capped
	} {
		b.Refill(c.at, 10, 10)
		if b.Tokens < c.want-1e-9 || b.Tokens > c.want+1e-9 {
			t.Fatalf("at +%s: %v tokens, want %v", time.Duration(c.at-start), b.Tokens, c.want)
		}
	}
}

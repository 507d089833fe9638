package containers

import (
	"net/netip"
	"testing"
)

func TestParseLabels(t *testing.T) {
	cases := []struct {
		name   string
		labels map[string]string
		ok     bool
		err    bool
		want   Spec
	}{
		{"none", map[string]string{"x": "y"}, false, false, Spec{}},
		{"minimal", map[string]string{LabelService: "redis.internal", LabelPort: "6379"}, true, false,
			Spec{Service: "redis.internal", Port: 6379, Protocol: "tcp"}},
		{"full", map[string]string{LabelService: "web", LabelPort: " 80 ", LabelProtocol: "HTTP", LabelStack: "shop"}, true, false,
			Spec{Service: "web", Port: 80, Protocol: "http", Stack: "shop"}},
		{"port not numeric", map[string]string{LabelService: "a", LabelPort: "http"}, true, true, Spec{}},
		{"port zero", map[string]string{LabelService: "a", LabelPort: "0"}, true, true, Spec{}},
		{"port too big", map[string]string{LabelService: "a", LabelPort: "65536"}, true, true, Spec{}},
		{"port missing", map[string]string{LabelService: "a"}, true, true, Spec{}},
		{"bad protocol", map[string]string{LabelService: "a", LabelPort: "1", LabelProtocol: "sctp"}, true, true, Spec{}},
		{"empty service", map[string]string{LabelService: " ", LabelPort: "1"}, true, true, Spec{}},
		{"bad service", map[string]string{LabelService: "a b", LabelPort: "1"}, true, true, Spec{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok, err := ParseLabels(c.labels)
			if ok != c.ok || (err != nil) != c.err || got != c.want {
				t.Fatalf("ParseLabels = %+v, %v, %v; want %+v, %v, err=%v", got, ok, err, c.want, c.ok, c.err)
			}
		})
	}
}

func FuzzParseLabels(f *testing.F) {
	f.Add("redis", "6379", "tcp")
	f.Add("", "x", "sctp")
	f.Fuzz(func(t *testing.T, svc, port, proto string) {
		s, ok, err := ParseLabels(map[string]string{LabelService: svc, LabelPort: port, LabelProtocol: proto})
		if !ok {
			t.Fatal("a service label must make ok true")
		}
		if err == nil && (s.Port < 1 || s.Port > 65535 || !protocols[s.Protocol] || s.Service == "") {
			t.Fatalf("accepted invalid spec %+v", s)
		}
	})
}

func TestReplicaAddress(t *testing.T) {
	r := Replica{Addresses: map[string]netip.Addr{
		"b": netip.MustParseAddr("172.18.0.2"), "a": netip.MustParseAddr("fd00::2"), "c": netip.MustParseAddr("172.19.0.2")}}
	if got := r.Address(); got != netip.MustParseAddr("172.18.0.2") {
		t.Fatalf("Address = %v", got)
	}
	if got := (Replica{}).Address(); got.IsValid() {
		t.Fatalf("Address of no networks = %v", got)
	}
}

func TestHealth(t *testing.T) {
	addr := map[string]netip.Addr{"bridge": netip.MustParseAddr("172.17.0.2")}
	for _, c := range []struct {
		r    Replica
		want string
	}{
		{Replica{State: StateRunning, Addresses: addr}, "passing"},
		{Replica{State: StatePaused, Addresses: addr}, "passing"},
		{Replica{State: StateExited}, "critical"},
		{Replica{State: StateRunning}, "critical"}, // network none: nothing to dial
	} {
		if got, out := health(c.r); got != c.want {
			t.Errorf("health(%+v) = %s (%s), want %s", c.r, got, out, c.want)
		}
	}
}

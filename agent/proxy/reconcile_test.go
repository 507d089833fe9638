package proxy

import (
	"reflect"
	"testing"
	"time"

	pb "github.com/nullnet/nullnet/proto"
)

func TestDesiredTable(t *testing.T) {
	b := &pb.PortMappingBundle{Version: 3, Mappings: []*pb.PortMapping{
		{Service: "web", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_HTTP},
		{Service: "redis", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP, ListenPort: 6379, IdleTimeoutSecs: 30, Stack: "s"},
		{Service: "dns", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_UDP, ListenPort: 6379},
		{Service: "big", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP, ListenPort: 70000},
		{Service: "zero", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_UDP},
	}}
	got, problems := desiredTable(b)
	want := map[listenerKey]Mapping{
		{TCP, 6379}: {Protocol: TCP, Port: 6379, Service: "redis", Stack: "s", IdleTimeout: 30 * time.Second},
		{UDP, 6379}: {Protocol: UDP, Port: 6379, Service: "dns"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("desiredTable = %v, want %v", got, want)
	}
	if len(problems) != 2 {
		t.Errorf("problems = %q, want two (port 70000 and port 0)", problems)
	}
}

func TestDiffTable(t *testing.T) {
	m := func(p Protocol, port uint16, svc string, timeout time.Duration) Mapping {
		return Mapping{Protocol: p, Port: port, Service: svc, IdleTimeout: timeout}
	}
	table := func(ms ...Mapping) map[listenerKey]Mapping {
		out := map[listenerKey]Mapping{}
		for _, x := range ms {
			out[x.key()] = x
		}
		return out
	}
	cases := []struct {
		name          string
		running, want map[listenerKey]Mapping
		diff          tableDiff
	}{
		{name: "empty"},
		{name: "open sorted", want: table(m(UDP, 53, "dns", 0), m(TCP, 80, "a", 0), m(TCP, 22, "ssh", 0)),
			diff: tableDiff{Open: []Mapping{m(TCP, 22, "ssh", 0), m(TCP, 80, "a", 0), m(UDP, 53, "dns", 0)}}},
		{name: "close", running: table(m(TCP, 22, "ssh", 0), m(UDP, 22, "x", 0)), want: table(m(TCP, 22, "ssh", 0)),
			diff: tableDiff{Close: []listenerKey{{UDP, 22}}}},
		{name: "rename and retime in place", running: table(m(TCP, 22, "ssh", 0), m(UDP, 53, "dns", time.Second)),
			want: table(m(TCP, 22, "ssh2", 0), m(UDP, 53, "dns", time.Minute)),
			diff: tableDiff{Update: []Mapping{m(TCP, 22, "ssh2", 0), m(UDP, 53, "dns", time.Minute)}}},
		{name: "protocol change is close+open", running: table(m(TCP, 5000, "svc", 0)), want: table(m(UDP, 5000, "svc", 0)),
			diff: tableDiff{Open: []Mapping{m(UDP, 5000, "svc", 0)}, Close: []listenerKey{{TCP, 5000}}}},
		{name: "unchanged", running: table(m(TCP, 1, "a", 0)), want: table(m(TCP, 1, "a", 0))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := diffTable(tc.running, tc.want)
			if !reflect.DeepEqual(got, tc.diff) {
				t.Errorf("diff = %+v\nwant   %+v", got, tc.diff)
			}
		})
	}
}

func TestSweepInterval(t *testing.T) {
	for _, tc := range []struct{ idle, want time.Duration }{
		{time.Second, 250 * time.Millisecond},
		{10 * time.Millisecond, 50 * time.Millisecond},
		{time.Hour, 5 * time.Second},
	} {
		if got := sweepInterval(tc.idle); got != tc.want {
			t.Errorf("sweepInterval(%s) = %s, want %s", tc.idle, got, tc.want)
		}
	}
}

package server

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
)

func tlsDef(stack, svc string, port int, idx uint64) Definition {
	d := tcpDef(stack, svc, port, idx)
	d.Protocol = config.ProtocolTLS
	return d
}

// TestResolveDefinitionsTLS: tls services share a port (one table entry each); a tcp and a tls
// service do not, the older holds the port whichever protocol it has; udp is its own space.
func TestResolveDefinitionsTLS(t *testing.T) {
	tlsA, tlsB := tlsDef("s", "a.example", 8443, 10), tlsDef("s", "b.example", 8443, 11)
	raw := tcpDef("r", "raw", 8443, 12)
	entry := func(svc string) Mapping {
		return Mapping{Stack: "s", Service: svc, Protocol: "tls", ListenPort: 8443, IdleTimeoutSecs: 30}
	}
	tests := []struct {
		name      string
		in        []Definition
		wantTable []Mapping
		wantLost  []string
		wantMsg   string
	}{
		{"two tls services on one port", []Definition{tlsB, tlsA},
			[]Mapping{entry("a.example"), entry("b.example")}, nil, ""},
		{"tcp after tls loses", []Definition{raw, tlsA, tlsB},
			[]Mapping{entry("a.example"), entry("b.example")}, []string{"raw"}, "tcp port 8443 of service \"raw\" (stack \"r\") is already held by tls service \"a.example\""},
		{"tls after tcp loses", []Definition{tcpDef("r", "raw", 8443, 1), tlsA},
			[]Mapping{{Stack: "r", Service: "raw", Protocol: "tcp", ListenPort: 8443, IdleTimeoutSecs: 30}}, []string{"a.example"},
			"a tcp and a tls service cannot share a port"},
		{"udp on the same number", []Definition{tlsA, {Stack: "u", Service: "q", Protocol: "udp", ListenPort: 8443, EntryPoint: true, CreateIndex: 3}},
			[]Mapping{entry("a.example"), {Stack: "u", Service: "q", Protocol: "udp", ListenPort: 8443}}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, table, conflicts := resolveDefinitions(tc.in)
			if !reflect.DeepEqual(table, tc.wantTable) {
				t.Errorf("table = %+v, want %+v", table, tc.wantTable)
			}
			var lost []string
			for _, c := range conflicts {
				lost = append(lost, c.Loser.Service)
				if !c.Port {
					t.Errorf("conflict %v not a port conflict", c)
				}
				if !strings.Contains(c.String(), tc.wantMsg) {
					t.Errorf("conflict %q lacks %q", c.String(), tc.wantMsg)
				}
			}
			if !reflect.DeepEqual(lost, tc.wantLost) {
				t.Errorf("lost %v, want %v", lost, tc.wantLost)
			}
		})
	}
}

func TestPortTableTLSProtoAndDiff(t *testing.T) {
	_, table, _ := resolveDefinitions([]Definition{tlsDef("s", "a.example", 8443, 1), tlsDef("s", "b.example", 8443, 2)})
	b := toProto(7, table)
	if len(b.Mappings) != 2 {
		t.Fatalf("mappings %v", b.Mappings)
	}
	for i, want := range []string{"a.example", "b.example"} {
		m := b.Mappings[i]
		if m.Service != want || m.Protocol != pb.ServiceProtocol_SERVICE_PROTOCOL_TLS || m.ListenPort != 8443 {
			t.Errorf("mapping %d = %v", i, m)
		}
	}
	_, fewer, _ := resolveDefinitions([]Definition{tlsDef("s", "a.example", 8443, 1)})
	if got, want := tableDiff(table, fewer), "-tls/8443/b.example=b.example"; got != want {
		t.Errorf("diff %q, want %q", got, want)
	}
	if got, want := tableDiff(fewer, table), "+tls/8443/b.example=b.example"; got != want {
		t.Errorf("diff %q, want %q", got, want)
	}
}

func TestDefinitionFromCatalogTLS(t *testing.T) {
	svc := config.StackService{Stack: "s", Name: "a.example", Protocol: config.ProtocolTLS, ListenPort: 8443,
		EntryPoint: true, Timeout: time.Minute}
	d, err := definitionFromCatalog(catalogEntry(svc.Name, definitionMeta(svc)))
	if err != nil || d.Protocol != "tls" || d.ListenPort != 8443 || !d.EntryPoint || d.Timeout != time.Minute {
		t.Fatalf("%+v %v", d, err)
	}
	if !inPortTable(d) {
		t.Fatal("tls definition not in the port table")
	}
}

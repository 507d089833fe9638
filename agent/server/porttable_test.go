package server

import (
	"context"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nullnet/nullnet/config"
)

func tcpDef(stack, svc string, port int, idx uint64) Definition {
	return Definition{Stack: stack, Service: svc, Protocol: "tcp", ListenPort: port, EntryPoint: true,
		Timeout: 30 * time.Second, CreateIndex: idx}
}

func TestResolveDefinitions(t *testing.T) {
	httpDef := Definition{Stack: "s", Service: "web.s", Protocol: "http", EntryPoint: true, Timeout: time.Minute, CreateIndex: 5}
	backend := Definition{Stack: "s", Service: "db.s", Protocol: "tcp", ListenPort: 5432, CreateIndex: 6} // no timeout
	udp := Definition{Stack: "s", Service: "dns.s", Protocol: "udp", ListenPort: 53, EntryPoint: true, CreateIndex: 7}
	tests := []struct {
		name      string
		in        []Definition
		wantDefs  []string
		wantTable []Mapping
		wantLost  []string // losers of conflicts
	}{
		{"empty", nil, nil, []Mapping{}, nil},
		{"backend-only is not in the table, http services follow the listeners",
			[]Definition{httpDef, backend, udp}, []string{"db.s", "dns.s", "web.s"},
			[]Mapping{{Stack: "s", Service: "dns.s", Protocol: "udp", ListenPort: 53},
				{Stack: "s", Service: "web.s", Protocol: "http", IdleTimeoutSecs: 60}}, nil},
		{"oldest registration wins a port, whatever the order",
			[]Definition{tcpDef("b", "new.b", 6379, 20), tcpDef("a", "old.a", 6379, 10)}, []string{"old.a"},
			[]Mapping{{Stack: "a", Service: "old.a", Protocol: "tcp", ListenPort: 6379, IdleTimeoutSecs: 30}}, []string{"new.b"}},
		{"same number for tcp and udp is fine",
			[]Definition{tcpDef("a", "x.a", 53, 1), udp}, []string{"dns.s", "x.a"},
			[]Mapping{{Stack: "a", Service: "x.a", Protocol: "tcp", ListenPort: 53, IdleTimeoutSecs: 30},
				{Stack: "s", Service: "dns.s", Protocol: "udp", ListenPort: 53}}, nil},
		{"duplicate service name: oldest wins",
			[]Definition{tcpDef("b", "x", 2, 9), tcpDef("a", "x", 1, 3)}, []string{"x"},
			[]Mapping{{Stack: "a", Service: "x", Protocol: "tcp", ListenPort: 1, IdleTimeoutSecs: 30}}, []string{"x"}},
		{"same index: ordered by name",
			[]Definition{tcpDef("a", "z", 1, 3), tcpDef("a", "y", 1, 3)}, []string{"y"},
			[]Mapping{{Stack: "a", Service: "y", Protocol: "tcp", ListenPort: 1, IdleTimeoutSecs: 30}}, []string{"z"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defs, table, conflicts := resolveDefinitions(tc.in)
			var names []string
			for _, d := range sortedDefs(defs) {
				names = append(names, d.Service)
			}
			if !reflect.DeepEqual(names, tc.wantDefs) {
				t.Errorf("defs = %v, want %v", names, tc.wantDefs)
			}
			if !reflect.DeepEqual(table, tc.wantTable) {
				t.Errorf("table = %+v, want %+v", table, tc.wantTable)
			}
			var lost []string
			for _, c := range conflicts {
				lost = append(lost, c.Loser.Service)
				if c.String() == "" || c.Key() == "" {
					t.Error("empty conflict text")
				}
			}
			if !reflect.DeepEqual(lost, tc.wantLost) {
				t.Errorf("conflict losers = %v, want %v", lost, tc.wantLost)
			}
		})
	}
}

func sortedDefs(m map[string]Definition) []Definition {
	set := newDefinitionSet()
	set.Set(m)
	all, _, _ := set.All()
	return all
}

func TestTableDiff(t *testing.T) {
	a := []Mapping{{Service: "x", Protocol: "tcp", ListenPort: 1}, {Service: "y", Protocol: "udp", ListenPort: 2}}
	b := []Mapping{{Service: "x", Protocol: "tcp", ListenPort: 1, IdleTimeoutSecs: 5}, {Service: "z", Protocol: "tcp", ListenPort: 3}}
	if got, want := tableDiff(a, b), "~tcp/1=x +tcp/3=z -udp/2=y"; got != want {
		t.Errorf("diff = %q, want %q", got, want)
	}
}

func TestPortTable_PublishSkipsIdenticalAndNeverBlocks(t *testing.T) {
	p := newPortTable()
	if _, v, _ := p.snapshot(); v != 0 {
		t.Fatal("version before the first publication")
	}
	if v, ok := p.publish([]Mapping{}); !ok || v != 1 {
		t.Fatalf("first (empty) table: %d %v", v, ok)
	}
	if _, ok := p.publish([]Mapping{}); ok {
		t.Fatal("identical table published again")
	}
	// Nobody reads: publishing many tables must not block.
	for i := 0; i < 1000; i++ {
		p.publish([]Mapping{{Service: "x", Protocol: "tcp", ListenPort: i + 1}})
	}
	table, v, _ := p.snapshot()
	if v != 1001 || table[0].ListenPort != 1000 {
		t.Fatalf("version %d table %+v", v, table)
	}
	// wait returns at once for an old version, and after the timeout for the current one.
	if _, got := p.wait(context.Background(), 5, time.Second); got != 1001 {
		t.Fatalf("wait = %d", got)
	}
	start := time.Now()
	if _, got := p.wait(context.Background(), 1001, 50*time.Millisecond); got != 1001 || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("wait did not block")
	}
}

func TestDefinitionMetaRoundTrip(t *testing.T) {
	tests := []config.StackService{
		{Stack: "s", Name: "a", Protocol: "tcp", ListenPort: 6379, EntryPoint: true, Timeout: 0},
		{Stack: "s", Name: "b", Protocol: "udp", ListenPort: 53, EntryPoint: true, Timeout: 30 * time.Second},
		{Stack: "s", Name: "c", Protocol: "http", EntryPoint: true, Timeout: 5 * time.Minute},
		{Stack: "s", Name: "d", Protocol: "http"},
	}
	for _, svc := range tests {
		meta := definitionMeta(svc)
		if _, ok := meta[MetaTimeout]; ok != svc.EntryPoint {
			t.Errorf("%s: timeout meta present=%v", svc.Name, ok)
		}
		d, err := definitionFromCatalog(catalogEntry(svc.Name, meta))
		if err != nil {
			t.Fatalf("%s: %v", svc.Name, err)
		}
		want := Definition{Stack: svc.Stack, Service: svc.Name, Protocol: svc.Protocol, ListenPort: svc.ListenPort,
			EntryPoint: svc.EntryPoint, Timeout: svc.Timeout}
		if !d.Equal(want) {
			t.Errorf("%s: %+v, want %+v", svc.Name, d, want)
		}
	}
	for _, bad := range []map[string]string{
		{MetaProtocol: "sctp"}, {MetaProtocol: "tcp", MetaListenPort: "0"}, {MetaProtocol: "tcp", MetaListenPort: "x"},
		{MetaTimeout: "-1"}, {MetaTimeout: "1.5"},
	} {
		if _, err := definitionFromCatalog(catalogEntry("x", bad)); err == nil {
			t.Errorf("meta %v accepted", bad)
		}
	}
}

func TestParseBlocking(t *testing.T) {
	tests := []struct {
		query   string
		index   uint64
		wait    time.Duration
		wantErr bool
	}{
		{"", 0, defaultBlockingWait, false},
		{"index=7", 7, defaultBlockingWait, false},
		{"index=7&wait=30s", 7, 30 * time.Second, false},
		{"index=7&wait=5", 7, 5 * time.Second, false},
		{"wait=1h", 0, maxBlockingWait, false},
		{"index=-1", 0, 0, true},
		{"wait=soon", 0, 0, true},
		{"wait=-5s", 0, 0, true},
	}
	for _, tc := range tests {
		r := httptest.NewRequest("GET", "/v1/port-mappings?"+tc.query, nil)
		idx, wait, err := parseBlocking(r)
		if (err != nil) != tc.wantErr || (!tc.wantErr && (idx != tc.index || wait != tc.wait)) {
			t.Errorf("%q: %d %v %v", tc.query, idx, wait, err)
		}
	}
}

func catalogEntry(name string, meta map[string]string) *api.CatalogService {
	return &api.CatalogService{ServiceName: name, ServiceMeta: meta}
}

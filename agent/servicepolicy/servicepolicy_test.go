package servicepolicy

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/protobuf/proto"
)

// full sets every field, so that a field added to config.ServicePolicy without a conversion
// fails the round trip (see TestEveryFieldSet).
func full() config.ServicePolicy {
	return config.ServicePolicy{
		HTTPSRedirect:           true,
		HSTS:                    180 * 24 * time.Hour,
		ACME:                    true,
		SendProxyProtocol:       "v2",
		Allow:                   []string{"203.0.113.0/24", "2001:db8::/32"},
		Deny:                    []string{"203.0.113.7/32"},
		MaxConnectionsPerClient: 10,
		NewConnectionsPerClient: config.Rate{PerSecond: 20, Burst: 40},
		MaxSessions:             1000,
		Routes:                  []config.HTTPRoute{{PathPrefix: "/api/", Service: "api.example.com", StripPrefix: true}},
		CloseOnUnhealthy:        true,
	}
}

func TestEveryFieldSet(t *testing.T) {
	v := reflect.ValueOf(full())
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Errorf("full() leaves %s zero: set it so the round trips cover it", v.Type().Field(i).Name)
		}
	}
	pv := reflect.ValueOf(ToProto(full())).Elem()
	for i := range pv.NumField() {
		f := pv.Type().Field(i)
		if f.IsExported() && pv.Field(i).IsZero() {
			t.Errorf("ToProto leaves pb.ServicePolicy.%s zero: convert it", f.Name)
		}
	}
}

func TestProtoRoundTrip(t *testing.T) {
	cases := map[string]config.ServicePolicy{
		"zero":     {},
		"full":     full(),
		"v1":       {SendProxyProtocol: "v1"},
		"close":    {CloseOnUnhealthy: true},
		"routes":   {Routes: []config.HTTPRoute{{PathPrefix: "/", Service: "a"}, {PathPrefix: "/b/", Service: "b"}}},
		"allowish": {Allow: []string{"10.0.0.0/8"}},
	}
	for name, p := range cases {
		t.Run(name, func(t *testing.T) {
			wire := ToProto(p)
			if p.IsZero() != (wire == nil) {
				t.Fatalf("zero policy must be absent on the wire: %v", wire)
			}
			// Through the wire bytes too, as a proxy receives it.
			b, err := proto.Marshal(wire)
			if err != nil {
				t.Fatal(err)
			}
			var back pb.ServicePolicy
			if err := proto.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			got := FromProto(wire)
			if wire != nil {
				got = FromProto(&back)
			}
			if !reflect.DeepEqual(got, p) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, p)
			}
		})
	}
}

func TestToProtoClamps(t *testing.T) {
	w := ToProto(config.ServicePolicy{MaxSessions: -1, MaxConnectionsPerClient: 1 << 40, HSTS: 1500 * time.Millisecond})
	if w.GetMaxSessions() != 0 || w.GetMaxConnectionsPerClient() != 1<<32-1 || w.GetHstsMaxAgeSecs() != 1 {
		t.Fatalf("clamping: %+v", w)
	}
	if got := FromProto(&pb.ServicePolicy{HstsMaxAgeSecs: 1 << 63}); got.HSTS <= 0 {
		t.Fatalf("huge max-age wrapped: %v", got.HSTS)
	}
}

func TestEncodeDecode(t *testing.T) {
	if v, d := Encode(config.ServicePolicy{}); v != nil || d != "" {
		t.Fatalf("zero policy encodes to %q %q", v, d)
	}
	v, d := Encode(full())
	v2, d2 := Encode(full())
	if string(v) != string(v2) || d != d2 || len(d) != 32 {
		t.Fatalf("encoding not stable: %s %s / %s %s", v, d, v2, d2)
	}
	if Digest(v) != d {
		t.Fatal("digest of the value differs from Encode's")
	}
	got, err := Decode(v)
	if err != nil || !reflect.DeepEqual(got, full()) {
		t.Fatalf("decode: %v %+v", err, got)
	}
	if _, err := Decode([]byte("{not json")); err == nil {
		t.Fatal("bad JSON accepted")
	}
	if _, err := Decode([]byte(`{"close_on_unhealthy":true,"from_the_future":1}`)); err != nil {
		t.Fatalf("unknown field rejected: %v", err)
	}
	if _, err := Decode([]byte(strings.Repeat(" ", MaxValueSize+1))); err == nil {
		t.Fatal("oversized value accepted")
	}
}

func TestKey(t *testing.T) {
	if k := Key("web", "api.example.com"); k != "nullnet/policies/web/api.example.com" {
		t.Fatal(k)
	}
}

func TestIndex(t *testing.T) {
	pol := ToProto(config.ServicePolicy{CloseOnUnhealthy: true})
	b := &pb.PortMappingBundle{Version: 7,
		Mappings: []*pb.PortMapping{
			{Service: "db", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP, ListenPort: 5432, Policy: pol},
			{Service: "dns", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_UDP, ListenPort: 53},
			{Service: "Bad Name", Protocol: pb.ServiceProtocol_SERVICE_PROTOCOL_TCP, ListenPort: 1, Policy: pol},
		},
		HttpServices: []*pb.PortMapping{{Service: "www.example.com", Policy: pol}, {Service: "plain.example.com"}, nil},
	}
	ix := NewIndex(b)
	if ix.Version() != 7 || ix.Len() != 2 {
		t.Fatalf("version %d len %d", ix.Version(), ix.Len())
	}
	if ix.Policy("db") == nil || ix.Policy("dns") != nil || ix.Policy("Bad Name") != nil || ix.Policy("www.example.com") == nil {
		t.Fatal("policy lookups")
	}
	if _, ok := ix.HTTPService("plain.example.com"); !ok {
		t.Fatal("http service without policy missing")
	}
	if _, ok := ix.HTTPService("db"); ok {
		t.Fatal("tcp service listed as http")
	}
	var nilIx *Index
	if nilIx.Policy("db") != nil || nilIx.Len() != 0 {
		t.Fatal("nil index")
	}
}

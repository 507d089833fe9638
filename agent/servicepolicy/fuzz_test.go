package servicepolicy

import (
	"reflect"
	"testing"
)

// FuzzDecode: whatever Consul KV holds (a hand edit, another version's document), Decode
// never panics, and what it accepts converts to the wire form and back without loss and
// encodes to a document that decodes to the same policy.
func FuzzDecode(f *testing.F) {
	v, _ := Encode(full())
	f.Add(v)
	f.Add([]byte(`{"close_on_unhealthy":true}`))
	f.Add([]byte(`{"hsts":-5,"max_sessions":-1,"new_connections_per_client":{"per_second":1e308,"burst":-3}}`))
	f.Add([]byte(`{"routes":[null,{"path_prefix":"/"}],"allow":[""]}`))
	f.Add([]byte("{not json"))
	f.Add([]byte("null"))
	f.Fuzz(func(t *testing.T, value []byte) {
		p, err := Decode(value)
		if err != nil {
			return
		}
		wire := ToProto(p)
		back := FromProto(wire)
		if wire == nil != p.IsZero() {
			t.Fatalf("zero policy on the wire mismatch: %+v", p)
		}
		again := FromProto(ToProto(back))
		if !reflect.DeepEqual(again, back) {
			t.Fatalf("wire round trip not stable:\n%+v\n%+v", back, again)
		}
		enc, digest := Encode(p)
		if p.IsZero() {
			return
		}
		p2, err := Decode(enc)
		if err != nil || !reflect.DeepEqual(p2, p) || Digest(enc) != digest {
			t.Fatalf("re-encoding: %v %+v vs %+v", err, p2, p)
		}
	})
}

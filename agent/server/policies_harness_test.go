package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nullnet/nullnet/agent/servicepolicy"
	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/protobuf/proto"
)

const policyStack = `stack "edge" {
  service "db.edge" {
    protocol           = "tcp"
    listen_port        = %d
    timeout            = 30
    close_on_unhealthy = %s
  }
  service "www.edge.example" {
    timeout            = "1m"
    close_on_unhealthy = %s
  }
  service "plain.edge.example" {
    timeout = 10
  }
}
`

// latest is the subscriber's newest bundle (nil before the first).
func (s *subscriber) latest() *pb.PortMappingBundle {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.bundles) == 0 {
		return nil
	}
	return s.bundles[len(s.bundles)-1]
}

// waitBundle waits until the newest bundle satisfies cond.
func (s *subscriber) waitBundle(t *testing.T, what string, timeout time.Duration, cond func(*pb.PortMappingBundle) bool) *pb.PortMappingBundle {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if b := s.latest(); b != nil && cond(b) {
			return b
		}
		s.mu.Lock()
		err := s.err
		s.mu.Unlock()
		if err != nil {
			t.Fatalf("stream ended: %v", err)
		}
		select {
		case <-s.notify:
		case <-deadline:
			t.Fatalf("no bundle with %s after %v; latest %v", what, timeout, s.latest())
		}
	}
}

func mappingOf(b *pb.PortMappingBundle, service string) *pb.PortMapping {
	for _, m := range append(append([]*pb.PortMapping(nil), b.GetMappings()...), b.GetHttpServices()...) {
		if m.GetService() == service {
			return m
		}
	}
	return nil
}

// policyFile renders the stack with close_on_unhealthy for the tcp and the http service.
func policyFile(port int, tcp, http bool) string {
	return fmt.Sprintf(policyStack, port, fmt.Sprint(tcp), fmt.Sprint(http))
}

// TestPolicies_StackToKVToSubscriber: a stack service's policy is written to Consul KV beside
// its definition (meta names the digest), reaches a WatchPortMappings subscriber in
// PortMapping.policy and in http_services, a change of policy alone publishes a new version,
// removing it deletes the key, and a hand-written bad document neither breaks the table nor
// survives (the leader repairs it).
func TestPolicies_StackToKVToSubscriber(t *testing.T) {
	e := newStackEnv(t, nil, nil)
	sub := e.subscribe()
	sub.waitTable(t, "", 20*time.Second)
	port := 15432

	e.write("edge.hcl", policyFile(port, true, false))
	b := sub.waitBundle(t, "the db policy", 10*time.Second, func(b *pb.PortMappingBundle) bool {
		return mappingOf(b, "db.edge").GetPolicy().GetCloseOnUnhealthy()
	})
	if got := render(b); got != fmt.Sprintf("tcp/%d=db.edge:30", port) {
		t.Fatalf("listeners %q", got)
	}
	var names []string
	for _, m := range b.GetHttpServices() {
		names = append(names, fmt.Sprintf("%s:%s:%d:%v", m.GetService(), m.GetProtocol(), m.GetListenPort(), m.GetPolicy() != nil))
	}
	if strings.Join(names, " ") != "plain.edge.example:SERVICE_PROTOCOL_HTTP:0:false www.edge.example:SERVICE_PROTOCOL_HTTP:0:false" {
		t.Fatalf("http_services %v", names)
	}

	// Consul holds the document and the digest.
	want, digest := servicepolicy.Encode(config.ServicePolicy{CloseOnUnhealthy: true})
	kv, _, err := e.client.KV().Get(servicepolicy.Key("edge", "db.edge"), nil)
	if err != nil || kv == nil || string(kv.Value) != string(want) {
		t.Fatalf("KV %s = %v, %v; want %s", servicepolicy.Key("edge", "db.edge"), kv, err, want)
	}
	if got := e.definitions()["db.edge"].Meta[servicepolicy.MetaDigest]; got != digest {
		t.Fatalf("meta %s = %q, want %q", servicepolicy.MetaDigest, got, digest)
	}
	if _, ok := e.definitions()["plain.edge.example"].Meta[servicepolicy.MetaDigest]; ok {
		t.Fatal("a service without policy has a digest")
	}
	keys, _, _ := e.client.KV().Keys(servicepolicy.KVPrefix, "", nil)
	if len(keys) != 1 {
		t.Fatalf("keys under the prefix: %v", keys)
	}

	// The policy alone moves: the http service gains one, the tcp service loses its own.
	v := b.GetVersion()
	e.write("edge.hcl", policyFile(port, false, true))
	b = sub.waitBundle(t, "the policies moved", 10*time.Second, func(b *pb.PortMappingBundle) bool {
		return mappingOf(b, "www.edge.example").GetPolicy().GetCloseOnUnhealthy()
	})
	if b.GetVersion() <= v || mappingOf(b, "db.edge").GetPolicy() != nil {
		t.Fatalf("version %d after %d, db policy %v", b.GetVersion(), v, mappingOf(b, "db.edge").GetPolicy())
	}
	waitKeys := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			keys, _, err := e.client.KV().Keys(servicepolicy.KVPrefix, "", nil)
			if err == nil && strings.Join(keys, ",") == strings.Join(want, ",") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("keys %v (%v), want %v", keys, err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitKeys(servicepolicy.Key("edge", "www.edge.example"))
	// No bundle ever carried a listener change: the policies travelled alone.
	for _, x := range sub.all()[1:] {
		if render(x) != fmt.Sprintf("tcp/%d=db.edge:30", port) {
			t.Fatalf("a bundle changed the listeners: %q", render(x))
		}
	}

	// A hand edit with bad JSON at the service's key: the digest no longer matches, the
	// table is held (never published without the policy), and the leader writes it back.
	seen := len(sub.all())
	if _, err := e.client.KV().Put(&api.KVPair{Key: servicepolicy.Key("edge", "www.edge.example"), Value: []byte("{not json")}, nil); err != nil {
		t.Fatal(err)
	}
	// A stray key under the prefix: deleted by the leader.
	if _, err := e.client.KV().Put(&api.KVPair{Key: servicepolicy.KVPrefix + "nobody/x", Value: []byte("[]")}, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		kv, _, err := e.client.KV().Get(servicepolicy.Key("edge", "www.edge.example"), nil)
		keys, _, _ := e.client.KV().Keys(servicepolicy.KVPrefix, "", nil)
		if err == nil && kv != nil && string(kv.Value) == string(want) && len(keys) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hand edit not repaired: %v %v keys %v", kv, err, keys)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // let any (wrong) publication arrive
	for _, x := range sub.all()[seen:] {
		if !mappingOf(x, "www.edge.example").GetPolicy().GetCloseOnUnhealthy() {
			t.Fatalf("a bundle lost the policy during the hand edit: %v", x)
		}
	}
	if n := len(sub.all()); n != seen {
		t.Errorf("%d bundles published for a hand edit that changed nothing in the end", n-seen)
	}

	// Removing the policy deletes the key and publishes the table without it.
	e.write("edge.hcl", policyFile(port, false, false))
	sub.waitBundle(t, "no policy", 10*time.Second, func(b *pb.PortMappingBundle) bool {
		return mappingOf(b, "www.edge.example") != nil && mappingOf(b, "www.edge.example").GetPolicy() == nil
	})
	waitKeys()

	// Versions grow and no bundle repeats the previous one.
	all := sub.all()
	for i := 1; i < len(all); i++ {
		if all[i].GetVersion() <= all[i-1].GetVersion() {
			t.Errorf("version %d after %d", all[i].GetVersion(), all[i-1].GetVersion())
		}
		x, y := proto.Clone(all[i]).(*pb.PortMappingBundle), proto.Clone(all[i-1]).(*pb.PortMappingBundle)
		x.Version, y.Version = 0, 0
		if proto.Equal(x, y) {
			t.Errorf("identical bundle re-sent at version %d", all[i].GetVersion())
		}
	}
}

package consul_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/agent/consul"
	"github.com/nullnet/nullnet/agent/consul/consultest"
)

const kvPrefix = "nullnet/test-docs/"

// withDoc is a definition carrying a KV document.
func withDoc(name, port, doc string) consul.CatalogService {
	s := def(name, port)
	s.Meta["doc"] = fmt.Sprint(len(doc)) // stands for the digest a real caller puts in meta
	s.KV = &consul.KVEntry{Key: kvPrefix + name, Value: []byte(doc)}
	return s
}

func kvKeys(t *testing.T, c *api.Client, prefix string) map[string]string {
	t.Helper()
	pairs, _, err := c.KV().List(prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range pairs {
		out[p.Key] = string(p.Value)
	}
	return out
}

// TestMirror_KVDocuments: documents are written with their services (larger than a meta value
// may be, and across several transactions for 150 services), rewritten when they change or are
// edited by hand, deleted with their service or their removal, and keys under the prefix that
// no service claims are deleted, while keys outside it are never touched.
func TestMirror_KVDocuments(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client(t)
	if _, err := c.KV().Put(&api.KVPair{Key: "nullnet/other", Value: []byte("keep")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.KV().Put(&api.KVPair{Key: kvPrefix + "stray", Value: []byte("x")}, nil); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat(`"203.0.113.0/24",`, 2000) // 34 KB: far past a 512-byte meta value
	m, err := consul.NewMirror(consul.MirrorConfig{Client: c, Logger: hclog.New(&hclog.LoggerOptions{Name: "m", Level: hclog.Warn}),
		LockKey: "nullnet/leader", Node: testNode, Tag: testTag, KVPrefix: kvPrefix})
	if err != nil {
		t.Fatal(err)
	}
	var desired []consul.CatalogService
	for i := range 150 {
		desired = append(desired, withDoc(fmt.Sprintf("s%03d", i), fmt.Sprint(1000+i), fmt.Sprintf(`{"n":%d}`, i)))
	}
	desired = append(desired, withDoc("big", "9000", big))
	m.Set(desired)
	stop := runMirror(t, m)
	defer stop()
	waitFor(t, "151 documents and no stray key", func() bool {
		kv := kvKeys(t, c, kvPrefix)
		return len(kv) == 151 && kv[kvPrefix+"big"] == big && kv[kvPrefix+"s149"] == `{"n":149}` && kv[kvPrefix+"stray"] == ""
	})
	if len(nodeServices(t, c)) != 151 {
		t.Fatalf("%d services", len(nodeServices(t, c)))
	}

	// A hand edit is written back once the mirror hears of it.
	if _, err := c.KV().Put(&api.KVPair{Key: kvPrefix + "s001", Value: []byte("{bad")}, nil); err != nil {
		t.Fatal(err)
	}
	m.KVChanged()
	waitFor(t, "hand edit repaired", func() bool { return kvKeys(t, c, kvPrefix)[kvPrefix+"s001"] == `{"n":1}` })

	// Changed document, removed document (service kept), removed service.
	desired[2] = withDoc("s002", "1002", `{"n":"two"}`)
	desired[3] = def("s003", "1003")
	m.Set(append(desired[:150:150], desired[:0]...)) // "big" removed
	waitFor(t, "changes applied", func() bool {
		kv := kvKeys(t, c, kvPrefix)
		_, has3 := kv[kvPrefix+"s003"]
		_, hasBig := kv[kvPrefix+"big"]
		return kv[kvPrefix+"s002"] == `{"n":"two"}` && !has3 && !hasBig && len(kv) == 149
	})
	if s := nodeServices(t, c)["nullnet-def-s-s003"]; s == nil || s.Meta["doc"] != "" {
		t.Fatalf("s003 after its document was removed: %+v", s)
	}
	m.Set(nil)
	waitFor(t, "everything removed", func() bool { return len(kvKeys(t, c, kvPrefix)) == 0 && len(nodeServices(t, c)) == 0 })
	if kvKeys(t, c, "nullnet/other")["nullnet/other"] != "keep" {
		t.Fatal("a key outside the prefix was touched")
	}
}

// runMirror runs m until the returned stop is called (also at the end of the test).
func runMirror(t *testing.T, m *consul.Mirror) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	stop := sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(stop)
	return stop
}

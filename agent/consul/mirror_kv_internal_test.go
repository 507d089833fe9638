package consul

import (
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestPackGroups(t *testing.T) {
	op := &api.TxnOp{}
	var groups []api.TxnOps
	groups = append(groups, api.TxnOps{op}) // the node
	for range 100 {
		groups = append(groups, api.TxnOps{op, op}) // a service and its document
	}
	chunks := packGroups(groups, MaxTxnOps)
	total := 0
	for _, c := range chunks {
		if len(c) > MaxTxnOps {
			t.Fatalf("chunk of %d ops", len(c))
		}
		total += len(c)
	}
	if total != 201 || len(chunks) != 2 || len(chunks[0]) != 127 {
		t.Fatalf("%d ops in %d chunks (first %d): a pair was split or ops lost", total, len(chunks), len(chunks[0]))
	}
	if packGroups(nil, MaxTxnOps) != nil {
		t.Fatal("no groups, no transactions")
	}
}

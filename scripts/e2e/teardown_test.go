package e2e

import (
	"slices"
	"strings"
	"testing"
)

// TestTeardownOrder: steps run newest first; adjacent process stops run together, never
// together with a plain step (a namespace must not be deleted under a process being stopped).
func TestTeardownOrder(t *testing.T) {
	cases := []struct {
		name  string
		steps string // p = process (concurrent), s = plain step; oldest first
		want  []string
	}{
		{"empty", "", nil},
		{"plain only", "ss", []string{"s1", "s0"}},
		{"processes over namespaces", "sspp", []string{"p2+p3", "s1", "s0"}},
		{"interleaved", "spsppp", []string{"p3+p4+p5", "s2", "p1", "s0"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r teardowns
			var batches []string
			for i, k := range tc.steps {
				name := string(k) + string(rune('0'+i))
				fn := func() {}
				if k == 'p' {
					r.addProcess(name, fn)
				} else {
					r.add(name, fn)
				}
			}
			for {
				b := r.popBatch()
				if len(b) == 0 {
					break
				}
				var names []string
				for _, s := range b {
					names = append(names, s.name)
				}
				slices.Sort(names)
				batches = append(batches, strings.Join(names, "+"))
			}
			if !slices.Equal(batches, tc.want) {
				t.Errorf("batches %v, want %v", batches, tc.want)
			}
		})
	}
}

package sessionstore

import "testing"

func TestPoolRoundRobinAndExhaustion(t *testing.T) {
	p := newPool(5, 7)
	var got []uint32
	for range 3 {
		id, ok := p.alloc()
		if !ok {
			t.Fatal("exhausted early")
		}
		got = append(got, id)
	}
	if got[0] != 5 || got[1] != 6 || got[2] != 7 {
		t.Fatalf("order %v", got)
	}
	if _, ok := p.alloc(); ok {
		t.Fatal("alloc beyond the range")
	}
	p.free(6)
	if id, ok := p.alloc(); !ok || id != 6 {
		t.Fatalf("after free(6): %d %v", id, ok)
	}
	p.free(5)
	p.free(7)
	// The cursor is past 6: 7 rests less than 5? No: round-robin continues at 7, then 5.
	if id, _ := p.alloc(); id != 7 {
		t.Fatalf("round-robin: got %d, want 7", id)
	}
	p.mark(100) // out of range: ignored
	if len(p.inUse) != 2 {
		t.Fatalf("inUse %v", p.inUse)
	}
}

package events

import (
	"fmt"
	"strconv"
	"testing"
	"time"
)

// sumCounts adds the count fields of the events of kind, by key.
func sumCounts(t *testing.T, evs []Event, kind string, key func(Event) string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, e := range evs {
		if e.Kind != kind {
			continue
		}
		n, err := strconv.Atoi(e.Fields["count"])
		if err != nil {
			t.Fatalf("event %d without a count: %+v", e.Index, e)
		}
		out[key(e)] += n
	}
	return out
}

// TestAggregatorBoundsRefusals: 6,000 refusals from 3 peers and 2 reasons become a handful of
// events whose counts add up to exactly 6,000 per peer and reason; other kinds pass through.
func TestAggregatorBoundsRefusals(t *testing.T) {
	store := New(4096, nil)
	agg := NewAggregator(AggregatorConfig{Next: store, Interval: 50 * time.Millisecond, Keys: RemoteTriggered})
	want := map[string]int{}
	key := func(e Event) string { return e.Fields["peer"] + "|" + e.Fields["reason"] }
	start := time.Now()
	for i := 0; i < 6000; i++ {
		peer := fmt.Sprintf("10.0.0.%d", i%3)
		reason := []string{"no certificate", "foreign CA"}[i%2]
		agg.Emit(Event{Kind: AuthRefused, Severity: Warning, Message: reason,
			Fields: map[string]string{"peer": peer, "reason": reason, "method": "/x"}})
		want[peer+"|"+reason]++
		if i%1000 == 0 {
			time.Sleep(60 * time.Millisecond) // let a few intervals pass during the flood
		}
	}
	agg.Emit(Event{Kind: ConfigReloaded})
	agg.Stop()
	took := time.Since(start)
	evs, _ := store.Since(0)
	got := sumCounts(t, evs, AuthRefused, key)
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%q: counted %d, want %d", k, got[k], n)
		}
	}
	refusals := countKind(evs, AuthRefused)
	// At most one event per key at its first sight and one per interval after.
	bound := len(want) * (2 + int(took/(50*time.Millisecond)))
	if refusals > bound || refusals < len(want) {
		t.Fatalf("%d auth_refused events for 6,000 refusals (bound %d)", refusals, bound)
	}
	if countKind(evs, ConfigReloaded) != 1 {
		t.Errorf("other kinds must pass through")
	}
	t.Logf("6,000 refusals -> %d events in %v", refusals, took.Round(time.Millisecond))
}

// TestAggregatorBoundedKeys: past MaxKeys, keys are counted together in one overflow summary
// per kind; the table never grows past MaxKeys.
func TestAggregatorBoundedKeys(t *testing.T) {
	store := New(4096, nil)
	agg := NewAggregator(AggregatorConfig{Next: store, Interval: time.Hour, MaxKeys: 100, Keys: RemoteTriggered})
	for i := 0; i < 50000; i++ {
		agg.Emit(Event{Kind: UDPUpstreamConnectFailed, Fields: map[string]string{
			"service": "dns", "upstream": fmt.Sprintf("10.1.%d.%d:53", i/256%256, i%256), "client_ip": "x"}})
		if agg.Keys() > 100 {
			t.Fatalf("%d keys after %d events, want at most 100", agg.Keys(), i+1)
		}
	}
	agg.Stop()
	evs, _ := store.Since(0)
	total, overflow := 0, 0
	for _, e := range evs {
		n, _ := strconv.Atoi(e.Fields["count"])
		total += n
		if e.Fields["aggregated"] != "" {
			overflow++
		}
	}
	if total != 50000 || overflow != 1 || len(evs) != 101 {
		t.Fatalf("total %d, overflow events %d, events %d; want 50000, 1, 101", total, overflow, len(evs))
	}
}

// TestAggregatorSumsUpstreamCounts: a summary from an aggregator upstream counts for its count.
func TestAggregatorSumsUpstreamCounts(t *testing.T) {
	store := New(16, nil)
	agg := NewAggregator(AggregatorConfig{Next: store, Interval: time.Hour, Keys: RemoteTriggered})
	f := map[string]string{"service": "s", "upstream": "u"}
	agg.Emit(Event{Kind: TCPUpstreamConnectFailed, Fields: f})
	agg.Emit(Event{Kind: TCPUpstreamConnectFailed, Fields: map[string]string{"service": "s", "upstream": "u", "count": "41"}})
	agg.Stop()
	evs, _ := store.Since(0)
	got := sumCounts(t, evs, TCPUpstreamConnectFailed, func(Event) string { return "" })
	if got[""] != 42 || len(evs) != 2 {
		t.Fatalf("%v in %d events, want 42 in 2", got, len(evs))
	}
	if evs[1].Fields["interval"] != "1h0m0s" {
		t.Fatalf("summary without its interval: %+v", evs[1])
	}
}

func countKind(evs []Event, kind string) int {
	n := 0
	for _, e := range evs {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

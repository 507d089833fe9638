package server

import (
	"net/http"
	"net/url"
	"testing"
)

// FuzzParseBlocking: any query string a caller sends is either refused with an error or yields
// a wait within [0, maxBlockingWait], so no caller can pin a goroutine longer than the cap.
func FuzzParseBlocking(f *testing.F) {
	for _, q := range []string{"", "index=5", "index=5&wait=30s", "wait=60", "wait=-1s", "index=-1",
		"wait=1000000h", "wait=99999999999", "index=18446744073709551616", "wait=%zz", "index=1&index=2"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/v1/events", RawQuery: raw}}
		index, wait, err := parseBlocking(r)
		if err != nil {
			if index != 0 || wait != 0 {
				t.Fatalf("error %v returned index %d wait %v", err, index, wait)
			}
			return
		}
		if wait < 0 || wait > maxBlockingWait {
			t.Fatalf("query %q: wait %v outside [0, %v]", raw, wait, maxBlockingWait)
		}
		if r.URL.Query().Get("wait") == "" && wait != defaultBlockingWait {
			t.Fatalf("query %q: no wait given, got %v", raw, wait)
		}
	})
}

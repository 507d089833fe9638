package agent

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func discardLogger() hclog.Logger { return hclog.NewNullLogger() }

// FuzzRequestedWait: whatever query a caller sends, the write deadline it earns is bounded.
func FuzzRequestedWait(f *testing.F) {
	for _, s := range []string{"", "index=5", "index=5&wait=1h", "seconds=30", "seconds=-1", "seconds=99999999999",
		"index", "%zz", "seconds=1e9"} {
		f.Add("/v1/events", s)
		f.Add("/debug/pprof/profile", s)
	}
	f.Fuzz(func(t *testing.T, path, query string) {
		r := &http.Request{Method: "GET", URL: &url.URL{Path: path, RawQuery: query}}
		if d := requestedWait(r); d < 0 || d > time.Hour {
			t.Fatalf("%s?%s: %v", path, query, d)
		}
	})
}

// FuzzHTTPErrorLog: any line net/http may log goes through without a panic.
func FuzzHTTPErrorLog(f *testing.F) {
	f.Add("http: TLS handshake error from 127.0.0.1:1: EOF\n")
	f.Add("http: panic serving 1.2.3.4:5: boom")
	f.Add("")
	f.Fuzz(func(t *testing.T, line string) {
		w := &httpErrorLog{logger: discardLogger(), warn: logThrottle{every: time.Second}}
		if n, err := w.Write([]byte(line)); n != len(line) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	})
}

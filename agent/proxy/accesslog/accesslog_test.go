package accesslog

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestAppendText(t *testing.T) {
	e := Entry{Time: time.Date(2026, 12, 2, 15, 4, 5, 123e6, time.UTC), Listener: "http", Client: "203.0.113.7:51234",
		Method: "GET", Host: "www.example.com", URI: "/api/users?id=7", Status: 200, Bytes: 512,
		Duration: 3210 * time.Microsecond, Service: "api.example.com", Upstream: "10.99.0.5:8080"}
	want := `time=2026-12-02T15:04:05.123Z listener=http client=203.0.113.7:51234 method=GET host=www.example.com uri="/api/users?id=7" status=200 bytes=512 duration_ms=3.210 service=api.example.com upstream=10.99.0.5:8080`
	if got := string(e.AppendText(nil)); got != want {
		t.Errorf("line:\n%s\nwant:\n%s", got, want)
	}
	// Hostile values stay on one line, quoted, and clipped.
	e = Entry{Method: "GET", Host: "a b\"c", URI: "/x\ny=" + strings.Repeat("é", 2000), Status: 404}
	got := string(e.AppendText(nil))
	if strings.Contains(got, "\n") || !strings.Contains(got, `host="a b\"c"`) || !strings.Contains(got, `upstream=-`) ||
		len(got) > 1500 || !strings.Contains(got, `..."`) {
		t.Errorf("hostile line: %s", got)
	}
}

func TestFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if !l.Log(Entry{Method: "GET", URI: "/" + strings.Repeat("x", i), Status: 200}) {
			t.Fatal("dropped with a free buffer")
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 100 || !strings.Contains(lines[99], "uri=/"+strings.Repeat("x", 99)+" ") {
		t.Fatalf("%d lines, last %q", len(lines), lines[len(lines)-1])
	}
	if l.Log(Entry{}) {
		t.Error("a closed log took an entry")
	}
	if l.Close() == nil {
		t.Error("second Close succeeded")
	}
	if _, err := Open(Config{Path: filepath.Join(t.TempDir(), "no", "such", "dir.log")}); err == nil {
		t.Error("opened a log in a missing directory")
	}
}

// stallWriter blocks every write until released: a stalled disk or log pipe.
type stallWriter struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (s *stallWriter) Write(p []byte) (int, error) {
	<-s.release
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// A stalled sink never blocks Log: past the buffer entries are dropped, counted, and reported
// once the writer gets going again.
func TestDropsWhenStalled(t *testing.T) {
	sink := &stallWriter{release: make(chan struct{})}
	logger := hclog.New(&hclog.LoggerOptions{Output: sink, Level: hclog.Info})
	var onDrop int
	var mu sync.Mutex
	l, err := Open(Config{Logger: logger, Buffer: 8, ReportEvery: 20 * time.Millisecond,
		OnDrop: func() { mu.Lock(); onDrop++; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 1000 {
		l.Log(Entry{Method: "GET", URI: "/", Status: 200})
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("1000 Log calls took %s against a stalled sink", d)
	}
	// One entry is in the writer's hands, 8 in the buffer.
	if d := l.Dropped(); d < 1000-9 || d > 1000-8 {
		t.Errorf("dropped %d, want 991 or 992", d)
	}
	mu.Lock()
	if uint64(onDrop) != l.Dropped() {
		t.Errorf("OnDrop called %d times, Dropped %d", onDrop, l.Dropped())
	}
	mu.Unlock()
	close(sink.release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	sink.mu.Lock()
	out := sink.buf.String()
	sink.mu.Unlock()
	if n := strings.Count(out, "request:"); n < 8 || n > 9 {
		t.Errorf("%d request lines written:\n%s", n, out)
	}
	if !strings.Contains(out, "access log lines dropped") || !strings.Contains(out, "total=99") {
		t.Errorf("no drop report:\n%s", out)
	}
}

// BenchmarkLog is a request's cost of handing its line to the log (the writer runs beside it,
// writing to a file).
func BenchmarkLog(b *testing.B) {
	l, err := Open(Config{Path: filepath.Join(b.TempDir(), "access.log"), Buffer: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	e := Entry{Time: time.Now(), Listener: "http", Client: "203.0.113.7:51234", Method: "GET", Host: "www.example.com",
		URI: "/api/users?id=7", Status: 200, Bytes: 512, Duration: 3 * time.Millisecond, Service: "api.example.com",
		Upstream: "10.99.0.5:8080"}
	b.ReportAllocs()
	for b.Loop() {
		l.Log(e)
	}
	b.StopTimer()
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(l.Dropped())/float64(b.N)*100, "%dropped")
}

// BenchmarkAppendText is the writer's cost of formatting one line.
func BenchmarkAppendText(b *testing.B) {
	e := Entry{Time: time.Now(), Listener: "http", Client: "203.0.113.7:51234", Method: "GET", Host: "www.example.com",
		URI: "/api/users?id=7", Status: 200, Bytes: 512, Duration: 3 * time.Millisecond, Service: "api.example.com",
		Upstream: "10.99.0.5:8080"}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = e.AppendText(buf[:0])
	}
}

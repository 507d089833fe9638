package certstore_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nullnet/nullnet/agent/server/certstore"
	"github.com/nullnet/nullnet/agent/server/certstore/certstoretest"
)

func problemsText(ps []certstore.Problem) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "[%s|%s|%s]", p.Domain, p.Entry, p.Reason)
	}
	return b.String()
}

// TestDirLoad walks one directory through the life of a certificate: installed, replaced, a bad
// replacement (the good one stays, reported once), removed, and entries that are no domains.
func TestDirLoad(t *testing.T) {
	ca := certstoretest.NewCA(t)
	root := t.TempDir()
	d := certstore.NewDir(root)
	now := time.Now()
	load := func() (map[string]certstore.Certificate, []certstore.Problem) {
		t.Helper()
		certs, problems, err := d.Load(now)
		if err != nil {
			t.Fatal(err)
		}
		if d.Changed() {
			t.Fatal("Changed right after Load")
		}
		return certs, problems
	}

	c1, k1 := ca.Valid(t, 90, "a.example.com")
	w1, wk1 := ca.Valid(t, 90, "*.example.com")
	certstoretest.WritePair(t, root, "a.example.com", c1, k1)
	certstoretest.WritePair(t, root, "_wildcard.example.com", w1, wk1)
	if err := os.WriteFile(filepath.Join(root, "README"), []byte("not a domain"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, ".staging"), 0o755); err != nil {
		t.Fatal(err)
	}
	certs, problems := load()
	if len(problems) != 0 || len(certs) != 2 || string(certs["a.example.com"].CertPEM) != string(c1) ||
		string(certs["*.example.com"].CertPEM) != string(w1) {
		t.Fatalf("first load: %d certs, problems %s", len(certs), problemsText(problems))
	}

	// Replaced by a good pair.
	c2, k2 := ca.Valid(t, 60, "a.example.com")
	certstoretest.WritePair(t, root, "a.example.com", c2, k2)
	if !d.Changed() {
		t.Fatal("a replaced pair is not seen as a change")
	}
	certs, problems = load()
	if len(problems) != 0 || string(certs["a.example.com"].CertPEM) != string(c2) {
		t.Fatalf("after replace: problems %s", problemsText(problems))
	}

	// Replaced by bad pairs: each is reported once and c2 stays.
	_, otherKey := ca.Valid(t, 60, "a.example.com")
	expired, expiredKey := ca.Issue(t, []string{"a.example.com"}, now.Add(-48*time.Hour), now.Add(-time.Hour))
	wrong, wrongKey := ca.Valid(t, 60, "b.other.org")
	for _, bad := range []struct {
		cert, key []byte
		reason    string
	}{{c2, otherKey, "does not match"}, {expired, expiredKey, "expired"}, {wrong, wrongKey, "does not cover"}} {
		certstoretest.WritePair(t, root, "a.example.com", bad.cert, bad.key)
		certs, problems = load()
		if len(problems) != 1 || problems[0].Domain != "a.example.com" || !strings.Contains(problems[0].Reason, bad.reason) {
			t.Fatalf("bad pair (%s): problems %s", bad.reason, problemsText(problems))
		}
		if string(certs["a.example.com"].CertPEM) != string(c2) {
			t.Fatalf("bad pair (%s) replaced the good certificate", bad.reason)
		}
		if _, problems = load(); len(problems) != 0 {
			t.Fatalf("the same bad pair reported again: %s", problemsText(problems))
		}
	}

	// Half a pair: the key is gone.
	if err := os.Remove(filepath.Join(root, "a.example.com", "privkey.pem")); err != nil {
		t.Fatal(err)
	}
	certs, problems = load()
	if len(problems) != 1 || !strings.Contains(problems[0].Reason, "privkey.pem is missing") || certs["a.example.com"].CertPEM == nil {
		t.Fatalf("missing key: problems %s", problemsText(problems))
	}

	// Removed, and a badly named directory.
	if err := os.RemoveAll(filepath.Join(root, "a.example.com")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "*.example.org"), 0o755); err != nil {
		t.Fatal(err)
	}
	certs, problems = load()
	if _, ok := certs["a.example.com"]; ok || len(certs) != 1 {
		t.Fatalf("after removal: %d certs", len(certs))
	}
	if len(problems) != 1 || !strings.Contains(problems[0].Reason, "_wildcard.example.org") {
		t.Fatalf("bad directory name: problems %s", problemsText(problems))
	}
	// An empty new directory (a copy under way) is neither served nor reported.
	if err := os.Mkdir(filepath.Join(root, "new.example.com"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, problems = load(); len(problems) != 0 {
		t.Fatalf("empty directory reported: %s", problemsText(problems))
	}
}

// TestDirBounds: oversized and non-regular files are refused without being read, and a
// directory of 10,000 domains loads within bounded memory; reloading it unchanged reads nothing.
func TestDirBounds(t *testing.T) {
	ca := certstoretest.NewCA(t)
	root := t.TempDir()
	c, k := ca.Valid(t, 90, "big.example.com")
	huge := make([]byte, certstore.MaxCertFileSize+1)
	copy(huge, c)
	certstoretest.WritePair(t, root, "big.example.com", huge, k)
	fifoDir := filepath.Join(root, "fifo.example.com")
	if err := os.Mkdir(fifoDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := mkfifo(filepath.Join(fifoDir, "fullchain.pem")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fifoDir, "privkey.pem"), k, 0o600); err != nil {
		t.Fatal(err)
	}
	d := certstore.NewDir(root)
	_, problems, err := d.Load(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	text := problemsText(problems)
	if len(problems) != 2 || !strings.Contains(text, "fullchain.pem is larger than 256 KiB") ||
		!strings.Contains(text, "fullchain.pem is not a regular file") {
		t.Fatalf("problems %s", text)
	}

	// 10,000 domains sharing one wildcard-free pair each would take minutes to issue; one pair
	// valid for every name under a wildcard is enough to exercise the reader.
	root = t.TempDir()
	names := []string{"*.many.example"}
	wc, wk := ca.Valid(t, 90, names...)
	const n = 10000
	for i := range n {
		certstoretest.WritePair(t, root, fmt.Sprintf("d%05d.many.example", i), wc, wk)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	d = certstore.NewDir(root)
	start := time.Now()
	certs, problems, err := d.Load(time.Now())
	took := time.Since(start)
	if err != nil || len(problems) != 0 || len(certs) != n {
		t.Fatalf("load of %d: %v, %d certs, problems %.300s", n, err, len(certs), problemsText(problems))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	perPair := len(wc) + len(wk)
	t.Logf("%d pairs (%d bytes each) loaded in %s; heap held %d MiB", n, perPair, took, held>>20)
	if limit := int64(n*perPair) * 3; held > limit {
		t.Fatalf("heap grew by %d bytes for %d bytes of certificates", held, n*perPair)
	}
	start = time.Now()
	if d.Changed() {
		t.Fatal("unchanged directory reported as changed")
	}
	if _, problems, _ = d.Load(time.Now()); len(problems) != 0 {
		t.Fatal(problemsText(problems))
	}
	t.Logf("unchanged reload (stat only) of %d pairs: %s", n, time.Since(start))
}

// TestDirCreatedLater: a certs_dir that does not exist is an error (nothing changes), and once
// it exists Changed says so, so the watcher's periodic check loads it.
func TestDirCreatedLater(t *testing.T) {
	root := filepath.Join(t.TempDir(), "certs")
	d := certstore.NewDir(root)
	if _, _, err := d.Load(time.Now()); err == nil {
		t.Fatal("a missing directory loaded")
	}
	if d.Changed() {
		t.Fatal("a still missing directory reported as changed")
	}
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	if !d.Changed() {
		t.Fatal("the directory's creation is not a change")
	}
	if _, _, err := d.Load(time.Now()); err != nil || d.Changed() {
		t.Fatalf("load after creation: %v", err)
	}
}

package dirwatch

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// tree is a directory with a fingerprint of what Reload last read: the contents of every
// file one level down.
type tree struct {
	dir    string
	mu     sync.Mutex
	seen   string
	loads  int
	loaded chan string
}

func (tr *tree) read() string {
	var out string
	subs, _ := os.ReadDir(tr.dir)
	for _, s := range subs {
		files, _ := os.ReadDir(filepath.Join(tr.dir, s.Name()))
		for _, f := range files {
			b, _ := os.ReadFile(filepath.Join(tr.dir, s.Name(), f.Name()))
			out += s.Name() + "/" + f.Name() + "=" + string(b) + ";"
		}
	}
	return out
}

func (tr *tree) subdirs() []string {
	var names []string
	subs, _ := os.ReadDir(tr.dir)
	for _, s := range subs {
		if s.IsDir() {
			names = append(names, s.Name())
		}
	}
	return names
}

// TestSubdirectoryChanges: writes inside subdirectories are seen, including in a subdirectory
// removed and created again under the same name (its first watch is gone with it), and the
// last write of a burst is always loaded.
func TestSubdirectoryChanges(t *testing.T) {
	tr := &tree{dir: t.TempDir(), loaded: make(chan string, 100)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Config{Name: "test directory", Debounce: 20 * time.Millisecond,
			Dir:     func() string { return tr.dir },
			Subdirs: tr.subdirs,
			Reload: func() {
				s := tr.read()
				tr.mu.Lock()
				tr.seen, tr.loads = s, tr.loads+1
				tr.mu.Unlock()
				tr.loaded <- s
			},
			Changed: func() bool {
				tr.mu.Lock()
				defer tr.mu.Unlock()
				return tr.read() != tr.seen
			},
		})
	}()
	defer func() { cancel(); <-done }()
	write := func(rel, v string) {
		p := filepath.Join(tr.dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(want string) {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case got := <-tr.loaded:
				if got == want {
					return
				}
			case <-timeout:
				t.Fatalf("never loaded %q (last %q)", want, tr.read())
			}
		}
	}
	time.Sleep(50 * time.Millisecond) // the watch is in place
	write("a/f", "1")
	expect("a/f=1;")
	write("a/f", "2") // inside an existing subdirectory
	expect("a/f=2;")
	if err := os.RemoveAll(filepath.Join(tr.dir, "a")); err != nil {
		t.Fatal(err)
	}
	expect("")
	write("a/f", "3") // same name again
	expect("a/f=3;")
	time.Sleep(100 * time.Millisecond)
	write("a/f", "4") // the recreated subdirectory is watched
	expect("a/f=4;")
	for i := range 50 { // a burst: the last write wins
		write("b/g", string(rune('A'+i%26)))
	}
	write("b/g", "last")
	expect("a/f=4;b/g=last;")
}

package config

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Non-regular files named *.hcl are refused at once, never read (a FIFO without a writer would
// block os.ReadFile, and even its open, forever).
func TestReadRegularFile(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "ok.hcl")
	os.WriteFile(regular, []byte(`node_name = "n1"`), 0o644)
	fifo := filepath.Join(dir, "fifo.hcl")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock.hcl")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	big := filepath.Join(dir, "big.hcl")
	f, _ := os.Create(big)
	f.Truncate(MaxFileSize + 1)
	f.Close()
	exact := filepath.Join(dir, "exact.hcl")
	f, _ = os.Create(exact)
	f.Truncate(MaxFileSize)
	f.Close()
	link := filepath.Join(dir, "link.hcl")
	os.Symlink(regular, link)

	cases := []struct {
		name string
		path string
		err  error
		says string
	}{
		{"regular", regular, nil, ""},
		{"symlink to a regular file", link, nil, ""},
		{"exactly the limit", exact, nil, ""},
		{"fifo", fifo, ErrNotRegularFile, "named pipe (FIFO)"},
		{"socket", sock, nil, "no such device"}, // a unix socket cannot be opened at all (ENXIO)
		{"device", "/dev/zero", ErrNotRegularFile, "character device"},
		{"directory", dir, ErrNotRegularFile, "directory"},
		{"too large", big, ErrFileTooLarge, "4 MiB"},
		{"missing", filepath.Join(dir, "absent.hcl"), os.ErrNotExist, "no such file"},
	}
	for _, tc := range cases {
		start := time.Now()
		_, err := ReadRegularFile(tc.path)
		if took := time.Since(start); took > time.Second {
			t.Errorf("%s: took %s", tc.name, took)
		}
		if tc.says == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.says) || (tc.err != nil && !errors.Is(err, tc.err)) {
			t.Errorf("%s: error %v, want %v saying %q", tc.name, err, tc.err, tc.says)
		}
	}
}

// A FIFO in a stacks directory or a config directory is a clear error, quickly.
func TestFIFOInDirectoriesIsAnError(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.hcl"), []byte("stack \"a\" {\n}\n"), 0o644)
	if err := syscall.Mkfifo(filepath.Join(dir, "b.hcl"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		set := LoadStacks(dir, StackRulesFor(Default()))
		if !set.Diags.HasErrors() || !strings.Contains(FormatDiagnostics(set.Files, set.Diags), "named pipe") {
			t.Errorf("stacks: %s", FormatDiagnostics(set.Files, set.Diags))
		}
		res := Load([]Source{{Path: dir, IsDir: true}}, false)
		if !res.Diags.HasErrors() || !strings.Contains(FormatDiagnostics(res.Files, res.Diags), "named pipe") {
			t.Errorf("config dir: %s", FormatDiagnostics(res.Files, res.Diags))
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("reading a directory with a FIFO blocked")
	}
}

// FuzzReadRegularFile: for any content of a regular file, ReadRegularFile returns exactly what
// os.ReadFile does (the raw open, fstat and bounded read lose nothing and add nothing).
func FuzzReadRegularFile(f *testing.F) {
	f.Add([]byte("node_name = \"n1\"\n"))
	f.Add([]byte{})
	f.Add([]byte{0, 0xff, '\n'})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, content []byte) {
		p := filepath.Join(dir, "f.hcl")
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := ReadRegularFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(content) {
			t.Fatalf("read %d bytes, wrote %d", len(got), len(content))
		}
	})
}

// FuzzIsStackFile: deciding whether a file is a stack file never panics, and a file judged one
// is then parsed as a stack set without panicking either.
func FuzzIsStackFile(f *testing.F) {
	f.Add([]byte("stack \"a\" {\n  service \"x\" {\n    timeout = \"1s\"\n  }\n}\n"))
	f.Add([]byte("node_name = \"n1\"\nserver {\n  enabled = true\n}\n"))
	f.Add([]byte("stack {"))
	f.Fuzz(func(t *testing.T, src []byte) {
		if IsStackFile("f.hcl", src) {
			_ = ParseStacks([]StackFile{{Path: "f.hcl", Bytes: src}}, StackRulesFor(Default()))
		}
	})
}

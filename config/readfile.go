package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// MaxFileSize is the largest configuration or stack file nullnet reads: 4 MiB, far above any
// real one (a 10,000-service stack file is about 1 MiB), and small enough that a stray log or
// image named *.hcl cannot make the agent hold a large buffer.
const MaxFileSize = 4 << 20

// Errors of ReadRegularFile, for errors.Is.
var (
	ErrNotRegularFile = errors.New("not a regular file")
	ErrFileTooLarge   = fmt.Errorf("larger than %d bytes (4 MiB)", MaxFileSize)
)

// ReadRegularFile reads a configuration or stack file. Only regular files of at most
// MaxFileSize bytes are read: a FIFO, socket or device named *.hcl would otherwise block
// os.ReadFile forever (a FIFO without a writer blocks even the open). The file is opened with
// O_NONBLOCK, so the open itself never waits, and the opened descriptor is checked with fstat,
// so a path swapped between a directory listing and the open is judged by what was opened.
func ReadRegularFile(path string) ([]byte, error) { return ReadRegularFileLimit(path, MaxFileSize) }

// tooLarge is ErrFileTooLarge for another limit than MaxFileSize.
type tooLarge struct{ limit int64 }

func (e tooLarge) Error() string        { return fmt.Sprintf("larger than %d bytes", e.limit) }
func (e tooLarge) Is(target error) bool { return target == ErrFileTooLarge }

// ReadRegularFileLimit is ReadRegularFile with another size limit (certificate files are much
// smaller than stack files). Its too-large error matches ErrFileTooLarge with errors.Is.
func ReadRegularFileLimit(path string, limit int64) ([]byte, error) {
	var errTooLarge error = ErrFileTooLarge
	if limit != MaxFileSize {
		errTooLarge = tooLarge{limit}
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "read", Path: path,
			Err: fmt.Errorf("%w (it is a %s); configuration and stack files must be regular files", ErrNotRegularFile, fileType(st.Mode))}
	}
	if st.Size > limit {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "read", Path: path, Err: errTooLarge}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit { // grew after the fstat
		return nil, &fs.PathError{Op: "read", Path: path, Err: errTooLarge}
	}
	return b, nil
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "named pipe (FIFO)"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFDIR:
		return "directory"
	default:
		return fmt.Sprintf("file of type %#o", mode&unix.S_IFMT)
	}
}

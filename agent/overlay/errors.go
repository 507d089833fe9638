package overlay

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// OpError is a failed kernel operation: which operation, on which device, and the errno. Its
// text ends up in CommandAck.error, so it must be readable without the logs.
type OpError struct {
	Op     string // e.g. "create vxlan", "add address 10.0.3.42/29"
	Device string
	Err    error
}

func (e *OpError) Error() string {
	msg := e.Err.Error()
	var errno syscall.Errno
	if errors.As(e.Err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			msg = fmt.Sprintf("%s (%s)", msg, name)
		}
	}
	return fmt.Sprintf("%s %s: %s", e.Op, e.Device, msg)
}

func (e *OpError) Unwrap() error { return e.Err }

func opErr(op, dev string, err error) error {
	if err == nil {
		return nil
	}
	return &OpError{Op: op, Device: dev, Err: err}
}

// ErrNotOurs is returned when a device with one of nullnet's names exists without nullnet's
// marker: it belongs to someone else and is never modified or deleted.
var ErrNotOurs = errors.New("device exists without nullnet's marker; not touching it")

package config

import (
	"path/filepath"

	"github.com/hashicorp/hcl/v2"
)

// proxy.access_log values besides a file path.
const (
	AccessLogOff = "off"
	AccessLogOn  = "on"
)

// validateAccessLog: "off", "on" or an absolute path (a relative one would depend on the
// directory the agent happened to start in).
func validateAccessLog(v string, at *hcl.Range) hcl.Diagnostics {
	if v == AccessLogOff || v == AccessLogOn || filepath.IsAbs(v) {
		return nil
	}
	return hcl.Diagnostics{errAt(at, "Invalid proxy.access_log",
		"%q is neither \"off\", \"on\" (the agent's log) nor an absolute file path.", v)}
}

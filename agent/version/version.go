// Package version holds the build's version, stamped by the linker (-X) in release builds.
package version

// Version is the release version; GitCommit is set by `make build`/`make release`.
var (
	Version   = "0.1.0-dev"
	GitCommit = ""
)

// String is "nullnet v<Version> (<commit>)".
func String() string {
	s := "nullnet v" + Version
	if GitCommit != "" {
		s += " (" + GitCommit + ")"
	}
	return s
}

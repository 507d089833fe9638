//go:build tools

// Package consulbuild pins the Consul server build used by tests and `make dev`.
package consulbuild

import _ "github.com/hashicorp/consul"

package server

import (
	"net/http"

	"github.com/nullnet/nullnet/agent/server/servers"
)

// registerServersHTTP adds GET /v1/servers: the servers Consul knows and which one holds the
// leader lock (agent/server/servers; website/docs/api/servers.md).
func (s *Server) registerServersHTTP(mux *http.ServeMux) {
	key := s.cfg.LockKey
	if key == "" {
		key = "nullnet/leader"
	}
	mux.HandleFunc("GET /v1/servers", servers.Handler(s.cfg.Consul, key))
}

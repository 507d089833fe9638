// Package servers lists the nullnet servers Consul knows (GET /v1/servers, `nullnet servers`):
// every instance of the agents' own "nullnet" service tagged "server", with its health and
// whether it holds the leader lock.
package servers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"

	"github.com/hashicorp/consul/api"

	"github.com/nullnet/nullnet/agent/server/leader"
	"github.com/nullnet/nullnet/agent/serverconn"
)

// Meta keys of the agents' registration (agent/register.go; repeated here because the agent
// package imports the server).
const (
	metaNode     = "nullnet-node"
	metaHTTPPort = "nullnet-http-port"
	metaGRPCPort = "nullnet-grpc-port"
	metaVersion  = "nullnet-version"
)

// Server is one entry of GET /v1/servers.
type Server struct {
	Name       string `json:"name"`
	Address    string `json:"address"`
	GRPCPort   int    `json:"grpc_port,omitempty"`
	HTTPPort   int    `json:"http_port,omitempty"`
	Version    string `json:"version,omitempty"`
	ConsulNode string `json:"consul_node"`
	// Health is the worst of the instance's checks: passing, warning or critical.
	Health string `json:"health"`
	Leader bool   `json:"leader"`
}

// List reads the servers and the leader lock at lockKey. A lock held by a plain api.Lock (no
// value naming the server) is matched by Consul node, and only when one server runs there.
func List(ctx context.Context, c *api.Client, lockKey string) ([]Server, uint64, error) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	entries, meta, err := c.Health().Service(serverconn.ConsulServiceName, "server", false, q)
	if err != nil {
		return nil, 0, fmt.Errorf("reading the servers from Consul: %w", err)
	}
	in, held, err := leader.Current(ctx, c, lockKey)
	if err != nil {
		return nil, 0, err
	}
	out := make([]Server, 0, len(entries))
	perNode := map[string]int{}
	for _, e := range entries {
		name := e.Service.Meta[metaNode]
		if name == "" {
			name = e.Node.Node
		}
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		grpc, _ := strconv.Atoi(e.Service.Meta[metaGRPCPort])
		http, _ := strconv.Atoi(e.Service.Meta[metaHTTPPort])
		out = append(out, Server{Name: name, Address: addr, GRPCPort: grpc, HTTPPort: http,
			Version: e.Service.Meta[metaVersion], ConsulNode: e.Node.Node, Health: e.Checks.AggregatedStatus()})
		perNode[e.Node.Node]++
	}
	if held {
		for i := range out {
			switch {
			case in.ConsulNode == "":
				out[i].Leader = out[i].Name == in.Name
			default:
				out[i].Leader = out[i].ConsulNode == in.ConsulNode && perNode[in.ConsulNode] == 1
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, meta.LastIndex, nil
}

// Handler serves GET /v1/servers from Consul (503 when Consul cannot answer). c nil: no Consul
// is configured, the answer is a 503 too.
func Handler(c *api.Client, lockKey string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if c == nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "this server has no Consul configured"})
			return
		}
		list, idx, err := List(r.Context(), c, lockKey)
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		}
		w.Header().Set("X-Nullnet-Index", strconv.FormatUint(idx, 10))
		writeJSON(w, http.StatusOK, list)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

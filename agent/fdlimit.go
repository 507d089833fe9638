package agent

import (
	"fmt"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/nullnet/nullnet/config"
)

// The open-file budget. Every UDP session holds a socket, every TCP relay two, every API
// connection one; when they reach RLIMIT_NOFILE, accept and socket fail everywhere at once and
// the agent loses its own API, its Consul checks and its control channel. So the agent raises
// the soft limit to the hard one at start, keeps a reserve of descriptors for its own control
// traffic, and caps what callers can hold to fit the rest.
const (
	// fdReserveBase is kept for everything that is not a relay or an API connection: Consul and
	// gRPC connections, listeners, netlink sockets, log and config files.
	fdReserveBase = 512
	// fdAPIShare is the largest fraction (1/n) of the budget the HTTP API may hold.
	fdAPIShare = 8
	// minAPIConns keeps a usable API even with a tiny limit.
	minAPIConns = 32
)

// fdBudget is the process's descriptor budget, worked out once at start.
type fdBudget struct {
	SoftBefore uint64 `json:"open_files_soft_at_start"`
	Soft       uint64 `json:"open_files"`
	Hard       uint64 `json:"open_files_hard"`
	// Reserved is what the agent keeps for its own control traffic and the HTTP API.
	Reserved int `json:"reserved"`
	// UDPMaxSessionsConfigured is proxy.udp_max_sessions as written; the effective value is
	// in the configuration.
	UDPMaxSessionsConfigured int `json:"udp_max_sessions_configured"`
	HTTPMaxConnsConfigured   int `json:"http_max_conns_configured"`
	UDPMaxSessions           int `json:"udp_max_sessions"`
	HTTPMaxConns             int `json:"http_max_conns"`

	// udpCap and httpCap are the most the budget allows, whatever the configuration asks: a
	// reload that raises udp_max_sessions is capped by them.
	udpCap, httpCap int
}

// raiseOpenFileLimit raises the soft RLIMIT_NOFILE to the hard limit, as Consul and nginx's
// worker_rlimit_nofile do, and reports the limits before and after.
func raiseOpenFileLimit() (before, soft, hard uint64, err error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, 0, fmt.Errorf("reading the open-file limit: %w", err)
	}
	before = lim.Cur
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			return before, lim.Cur, lim.Max, fmt.Errorf("raising the open-file limit to %d: %w", lim.Max, err)
		}
		lim = raised
	}
	return before, lim.Cur, lim.Max, nil
}

// planBudget splits a soft limit between the reserve, the HTTP API and UDP sessions. Pure, so
// the arithmetic is tested on its own.
func planBudget(soft uint64, c *config.Config) fdBudget {
	b := fdBudget{Soft: soft, UDPMaxSessionsConfigured: c.Proxy.UDPMaxSessions,
		HTTPMaxConnsConfigured: c.Limits.HTTPMaxConns}
	limit := int(min(soft, 1<<30))
	b.httpCap = max(minAPIConns, limit/fdAPIShare)
	b.HTTPMaxConns = min(c.Limits.HTTPMaxConns, b.httpCap)
	b.Reserved = fdReserveBase + b.HTTPMaxConns
	b.udpCap = max(1, limit-b.Reserved)
	b.UDPMaxSessions = min(c.Proxy.UDPMaxSessions, b.udpCap)
	return b
}

// apply returns cfg with the budget's caps in effect (cfg itself is not changed).
func (b fdBudget) apply(cfg *config.Config) *config.Config {
	c := *cfg
	c.Proxy.UDPMaxSessions = min(c.Proxy.UDPMaxSessions, b.udpCap)
	c.Limits.HTTPMaxConns = min(c.Limits.HTTPMaxConns, b.httpCap)
	return &c
}

// budgetFor raises the limit, plans the budget for cfg and says once what it had to cap.
func budgetFor(cfg *config.Config, logger hclog.Logger) fdBudget {
	before, soft, hard, err := raiseOpenFileLimit()
	if err != nil {
		logger.Warn("cannot raise the open-file limit", "error", err)
	}
	b := planBudget(soft, cfg)
	b.SoftBefore, b.Hard = before, hard
	if before < soft {
		logger.Info("raised the open-file limit", "from", before, "to", soft)
	}
	if cfg.Proxy.Enabled && b.UDPMaxSessions < cfg.Proxy.UDPMaxSessions {
		logger.Warn("proxy.udp_max_sessions does not fit the open-file limit; capped so that the API and the "+
			"control channel keep descriptors (raise LimitNOFILE / ulimit -n to allow more)",
			"udp_max_sessions", cfg.Proxy.UDPMaxSessions, "effective", b.UDPMaxSessions,
			"open_files", soft, "reserved", b.Reserved)
	}
	return b
}

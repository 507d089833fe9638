package tlsutil

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"

	"github.com/nullnet/nullnet/config"
)

// HTTPServerConfig is the tls.Config of an agent's HTTP API. With verify_incoming the handshake
// verifies a client certificate when one is given but does not demand one: the HTTPAuthorizer
// refuses requests without it, except on public routes such as the health check that Consul
// probes without a certificate. nil when TLS is off.
func HTTPServerConfig(c config.TLS) (*tls.Config, error) {
	tc, err := ServerConfig(c)
	if err != nil || tc == nil {
		return tc, err
	}
	if c.VerifyIncoming {
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tc, nil
}

// HTTPAuthorizer guards the HTTP API when verify_incoming is on, with the gRPC API's rule that
// authority follows identity: reads (GET, HEAD) need any certificate signed by the CA; writes
// (DELETE /v1/sessions/{id} and any other method) need an operator certificate, one with the
// cli role (`nullnet tls cert create -cli`). A node's certificate can read the API but not
// change what it serves. Public paths are served to anyone (GET only).
type HTTPAuthorizer struct {
	Datacenter string
	Public     []string
	// OnRefuse is told about every refusal, with the caller's address.
	OnRefuse func(route, node, peer, reason string)
}

// Wrap returns h behind the authorizer.
func (a *HTTPAuthorizer) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		read := r.Method == http.MethodGet || r.Method == http.MethodHead
		if read && slices.Contains(a.Public, r.URL.Path) {
			h.ServeHTTP(w, r)
			return
		}
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			a.refuse(w, r, "", http.StatusUnauthorized, "a client certificate signed by the CA is required")
			return
		}
		if read {
			h.ServeHTTP(w, r)
			return
		}
		cert := r.TLS.VerifiedChains[0][0]
		id, err := IdentityOf(cert, a.Datacenter)
		if err != nil {
			a.refuse(w, r, "", http.StatusForbidden, r.Method+" needs an operator certificate: "+err.Error())
			return
		}
		if !id.Has(RoleCLI) {
			a.refuse(w, r, id.Node, http.StatusForbidden, fmt.Sprintf("%s needs an operator certificate "+
				"(nullnet tls cert create -cli); %s's certificate is a node's", r.Method, id.Node))
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (a *HTTPAuthorizer) refuse(w http.ResponseWriter, r *http.Request, node string, code int, reason string) {
	if a.OnRefuse != nil {
		peer := r.RemoteAddr
		if host, _, err := net.SplitHostPort(peer); err == nil {
			peer = host
		}
		a.OnRefuse(r.Method+" "+r.URL.Path, node, peer, reason)
	}
	httpRefuse(w, code, reason)
}

func httpRefuse(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

package tlsutil

import (
	"crypto/tls"
	"encoding/json"
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

// HTTPAuthorizer guards the HTTP API when verify_incoming is on: every route but the public
// ones needs a client certificate signed by the CA.
type HTTPAuthorizer struct {
	// Public paths are served to callers without a certificate (GET only).
	Public []string
}

// Wrap returns h behind the authorizer.
func (a *HTTPAuthorizer) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && slices.Contains(a.Public, r.URL.Path) {
			h.ServeHTTP(w, r)
			return
		}
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			httpRefuse(w, http.StatusUnauthorized, "a client certificate signed by the CA is required")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func httpRefuse(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

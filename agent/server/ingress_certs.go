package server

import (
	"context"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/tlsutil"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// certSendTimeout bounds one WatchCertificates send: a proxy that stops reading (its flow
// control window stays closed) loses its stream instead of holding an encoded bundle forever.
// It reconnects and gets the current set.
const certSendTimeout = 30 * time.Second

// WatchCertificates streams the certificate bundle on subscribe, then the full bundle after
// every change. A slow proxy only delays itself: versions published meanwhile coalesce into the
// newest, and no writer waits for a reader.
//
// The bundle carries private keys, so it is only served over mutual TLS to a proxy certificate
// (the Authorizer checks the role) or by a server with TLS off (a trusted network, documented).
// A server with TLS but without verify_incoming refuses: anyone could ask.
func (i *ingressService) WatchCertificates(req *pb.WatchCertificatesRequest, stream pb.Ingress_WatchCertificatesServer) error {
	if req.GetProxyNode() != "" {
		if err := checkNodeName("proxy_node", req.GetProxyNode()); err != nil {
			return err
		}
	}
	ctx := stream.Context()
	if err := i.s.certsAllowed(ctx); err != nil {
		return err
	}
	logger := i.s.logger.With("proxy_node", req.GetProxyNode())
	logger.Debug("certificate subscriber connected")
	defer logger.Debug("certificate subscriber gone")
	metrics.IncrCounterWithLabels([]string{"nullnet", "server", "certificates", "subscribers"}, 1,
		[]metrics.Label{{Name: "proxy_node", Value: req.GetProxyNode()}})
	timeout := i.s.certSendTimeout
	if timeout <= 0 {
		timeout = certSendTimeout
	}
	var sent uint64
	for {
		b, changed := i.s.certs.Snapshot()
		if b.GetVersion() != sent {
			if err := sendWithin(stream, b, timeout); err != nil {
				return err
			}
			sent = b.GetVersion()
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// sendWithin sends b, giving up after timeout. The send goes on in its goroutine until the
// handler returns, which ends the stream and with it the send.
func sendWithin(stream pb.Ingress_WatchCertificatesServer, b *pb.CertificateBundle, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- stream.Send(b) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		metrics.IncrCounter([]string{"nullnet", "server", "certificates", "send_timeouts"}, 1)
		return status.Errorf(codes.DeadlineExceeded, "the certificate bundle (version %d) was not taken within %s", b.GetVersion(), timeout)
	}
}

// certsAllowed decides whether this caller may receive private keys.
func (s *Server) certsAllowed(ctx context.Context) error {
	s.mu.Lock()
	tc := s.agentCfg.TLS
	s.mu.Unlock()
	if tc.CertFile == "" {
		return nil // TLS off: the operator's choice of a trusted network (see tls.md)
	}
	if !tc.VerifyIncoming {
		return status.Error(codes.PermissionDenied, "WatchCertificates carries private keys; this server has TLS "+
			"without tls.verify_incoming, so it cannot tell a proxy from anyone else: turn verify_incoming on")
	}
	// The Authorizer has already checked the proxy role; this guards against a handler reached
	// some other way.
	if id, ok := tlsutil.IdentityFrom(ctx); !ok || !id.Has(tlsutil.RoleProxy) {
		return status.Error(codes.PermissionDenied, "WatchCertificates needs a proxy certificate")
	}
	return nil
}

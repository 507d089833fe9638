package proxy

import (
	"context"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/nullnet/nullnet/agent/certs"
	"github.com/nullnet/nullnet/lib/retry"
	pb "github.com/nullnet/nullnet/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxCertBundle bounds one certificate bundle the proxy accepts: the server caps a certs_dir at
// 128 MiB, and ACME certificates and challenges come on top.
const maxCertBundle = 256 << 20

// certsUnsupportedRetry is the reconnect interval when the server does not offer
// WatchCertificates at all (an older server) or refuses it (TLS without verify_incoming): the
// answer will not change soon.
const certsUnsupportedRetry = time.Minute

// Certificates is the set the HTTPS listener serves, replaced whole on every bundle the servers
// push. A handshake reads one snapshot, so connections keep the certificate they started with.
func (p *Proxy) Certificates() *certs.Set { return p.certs }

// watchCerts keeps a WatchCertificates stream open. Losing it changes nothing: the proxy serves
// the last set until a new one arrives (a reconnect brings the full current set).
func (p *Proxy) watchCerts(ctx context.Context) {
	client := pb.NewIngressClient(p.cfg.Conn)
	parser := certs.NewParser()
	backoff := watchBackoffMin
	lastErr := ""
	for ctx.Err() == nil {
		got, err := p.watchCertsOnce(ctx, client, parser)
		if ctx.Err() != nil {
			return
		}
		if got {
			backoff, lastErr = watchBackoffMin, ""
		}
		wait := retry.Jitter(backoff, 0.2)
		if c := status.Code(err); c == codes.Unimplemented || c == codes.PermissionDenied || c == codes.Unauthenticated {
			wait = certsUnsupportedRetry
		}
		// The same failure again is not news: one warning per distinct error.
		if msg := errString(err); msg != lastErr {
			p.logger.Warn("certificate stream lost; keeping the current certificates and reconnecting",
				"error", err, "retry_in", wait)
			lastErr = msg
		} else {
			p.logger.Debug("certificate stream still failing", "error", err, "retry_in", wait)
		}
		if !retry.Sleep(ctx, wait) {
			return
		}
		backoff = min(backoff*2, watchBackoffMax)
	}
}

// watchCertsOnce runs one stream until it fails; it reports whether a bundle arrived.
func (p *Proxy) watchCertsOnce(ctx context.Context, client pb.IngressClient, parser *certs.Parser) (bool, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.WatchCertificates(sctx, &pb.WatchCertificatesRequest{ProxyNode: p.cfg.Agent.NodeName},
		grpc.MaxCallRecvMsgSize(maxCertBundle))
	if err != nil {
		return false, err
	}
	return recvStream(ctx, stream.Recv, func(b *pb.CertificateBundle, _ bool) { p.applyCerts(parser, b) })
}

// applyCerts installs the bundle's certificates. A bad entry is left out (logged the first time
// it is seen) and never affects the others.
func (p *Proxy) applyCerts(parser *certs.Parser, b *pb.CertificateBundle) {
	start := time.Now()
	snap, problems := parser.Parse(b)
	const maxProblemLines = 10
	for i, pr := range problems {
		if i == maxProblemLines {
			p.logger.Warn("more certificates skipped", "version", b.GetVersion(), "count", len(problems)-i)
			break
		}
		p.logger.Warn("certificate skipped; the others are served", "version", b.GetVersion(),
			"kind", pr.Kind, "domain", pr.Domain, "reason", pr.Reason)
	}
	p.certs.Replace(snap)
	p.logger.Info("certificates received", "version", b.GetVersion(), "certificates", len(snap.ByName),
		"http_challenges", len(snap.HTTPChallenges), "tls_alpn_challenges", len(snap.TLSALPNChallenges),
		"took", time.Since(start))
	metrics.SetGauge([]string{"nullnet", "proxy", "certificates"}, float32(len(snap.ByName)))
}

package servicepolicy

import (
	"math"
	"time"

	"github.com/nullnet/nullnet/config"
	pb "github.com/nullnet/nullnet/proto"
)

// ToProto converts a policy for the port table: nil for the zero policy ("absent = none").
func ToProto(p config.ServicePolicy) *pb.ServicePolicy {
	if p.IsZero() {
		return nil
	}
	out := &pb.ServicePolicy{
		HttpsRedirect:                p.HTTPSRedirect,
		HstsMaxAgeSecs:               uint64(max(p.HSTS, 0) / time.Second),
		Acme:                         p.ACME,
		SendProxyProtocol:            proxyProtocolToProto(p.SendProxyProtocol),
		Allow:                        cloneStrings(p.Allow),
		Deny:                         cloneStrings(p.Deny),
		MaxConnectionsPerClient:      clampU32(p.MaxConnectionsPerClient),
		NewConnectionsPerClientRate:  max(p.NewConnectionsPerClient.PerSecond, 0),
		NewConnectionsPerClientBurst: clampU32(p.NewConnectionsPerClient.Burst),
		MaxSessions:                  clampU32(p.MaxSessions),
		CloseOnUnhealthy:             p.CloseOnUnhealthy,
	}
	for _, r := range p.Routes {
		out.Routes = append(out.Routes, &pb.HTTPRoute{PathPrefix: r.PathPrefix, Service: r.Service, StripPrefix: r.StripPrefix})
	}
	return out
}

// FromProto is the inverse of ToProto; nil is the zero policy.
func FromProto(p *pb.ServicePolicy) config.ServicePolicy {
	if p == nil {
		return config.ServicePolicy{}
	}
	out := config.ServicePolicy{
		HTTPSRedirect:           p.GetHttpsRedirect(),
		HSTS:                    secondsToDuration(p.GetHstsMaxAgeSecs()),
		ACME:                    p.GetAcme(),
		SendProxyProtocol:       proxyProtocolFromProto(p.GetSendProxyProtocol()),
		Allow:                   cloneStrings(p.GetAllow()),
		Deny:                    cloneStrings(p.GetDeny()),
		MaxConnectionsPerClient: int(p.GetMaxConnectionsPerClient()),
		NewConnectionsPerClient: config.Rate{PerSecond: p.GetNewConnectionsPerClientRate(),
			Burst: int(p.GetNewConnectionsPerClientBurst())},
		MaxSessions:      int(p.GetMaxSessions()),
		CloseOnUnhealthy: p.GetCloseOnUnhealthy(),
	}
	for _, r := range p.GetRoutes() {
		if r == nil {
			continue
		}
		out.Routes = append(out.Routes, config.HTTPRoute{PathPrefix: r.GetPathPrefix(), Service: r.GetService(),
			StripPrefix: r.GetStripPrefix()})
	}
	return out
}

func proxyProtocolToProto(v string) pb.ProxyProtocolVersion {
	switch v {
	case "v1":
		return pb.ProxyProtocolVersion_PROXY_PROTOCOL_V1
	case "v2":
		return pb.ProxyProtocolVersion_PROXY_PROTOCOL_V2
	}
	return pb.ProxyProtocolVersion_PROXY_PROTOCOL_NONE
}

func proxyProtocolFromProto(v pb.ProxyProtocolVersion) string {
	switch v {
	case pb.ProxyProtocolVersion_PROXY_PROTOCOL_V1:
		return "v1"
	case pb.ProxyProtocolVersion_PROXY_PROTOCOL_V2:
		return "v2"
	}
	return ""
}

func secondsToDuration(s uint64) time.Duration {
	return time.Duration(min(s, uint64(math.MaxInt64/int64(time.Second)))) * time.Second
}

func clampU32(n int) uint32 {
	switch {
	case n <= 0:
		return 0
	case uint64(n) > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(n)
}

func cloneStrings(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return append([]string(nil), s...)
}

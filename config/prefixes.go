package config

import (
	"fmt"
	"net/netip"
)

// MaxPrefixListEntries bounds a list of CIDRs (allow, deny, proxy_protocol_from). Matchers stay
// fast far beyond it; the bound keeps a mistake (a generated list of every address) from
// reaching Consul and every proxy.
const MaxPrefixListEntries = 10000

// ParsePrefixes parses CIDRs or single addresses (a single address is a /32 or /128) into
// canonical prefixes, refusing lists longer than MaxPrefixListEntries. The config and stack
// parsers and the proxies all use it, so that they accept the same lists.
func ParsePrefixes(entries []string) ([]netip.Prefix, error) {
	if len(entries) > MaxPrefixListEntries {
		return nil, fmt.Errorf("%d entries; at most %d are allowed", len(entries), MaxPrefixListEntries)
	}
	out := make([]netip.Prefix, 0, len(entries))
	for _, e := range entries {
		p, err := ParsePrefix(e)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// ParsePrefix parses one entry: a CIDR ("203.0.113.0/24", "2001:db8::/32") or a single
// address. The result is canonical (masked; IPv4-mapped IPv6 written as IPv4); host bits set
// in a CIDR are an error, since "10.1.2.3/8" is more likely a typo than a wish for 10.0.0.0/8.
func ParsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: a zone is not allowed", s)
		}
		a = a.Unmap()
		p = netip.PrefixFrom(a, a.BitLen())
	} else {
		p, err = netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a CIDR", s)
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, p.Masked())
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
	}
	return p, nil
}

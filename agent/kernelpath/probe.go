// Package kernelpath holds the kernel fast path's parts: the nftables table that DNATs an
// established client's flows into its tunnel (package nft), the conntrack reader that counts
// and flushes those flows (package ct), and Probe, which says whether this kernel can do it.
//
// Foundation only: nothing in agent/proxy uses it yet (see website/docs/kernel-path.md).
package kernelpath

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"

	"github.com/nullnet/nullnet/agent/kernelpath/ct"
	"github.com/nullnet/nullnet/agent/kernelpath/nft"
)

// ProbeResult says whether the kernel path can run here and, when not, why.
type ProbeResult struct {
	OK     bool
	Reason string // empty when OK
}

// ProbeConfig configures Probe.
type ProbeConfig struct {
	// NetNS is an fd of the network namespace to probe; 0 means the caller's.
	NetNS int
}

// Probe checks, with the real kernel, everything the kernel path needs: an nftables table with
// a NAT prerouting chain, concatenated maps and a DNAT-from-map rule; adding, listing and
// deleting an element; and conntrack netlink (a filtered dump by mark). It works in a throwaway
// table "nullnet_probe_<random>" that it removes before returning; nothing else is touched.
func Probe(cfg ProbeConfig) ProbeResult {
	if err := probe(cfg); err != nil {
		return ProbeResult{Reason: err.Error()}
	}
	return ProbeResult{OK: true}
}

func probe(cfg ProbeConfig) (err error) {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	t, err := nft.New(nft.Config{Name: "nullnet_probe_" + hex.EncodeToString(b), NetNS: cfg.NetNS})
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer func() {
		if serr := t.Stop(); serr != nil && err == nil {
			err = fmt.Errorf("nftables: %w", serr)
		}
	}()
	if err := t.Ensure(); err != nil {
		return fmt.Errorf("nftables (nat chain, concatenated maps, dnat from a map): %w", err)
	}
	e := nft.Entry{
		Key:    nft.Key{Client: netip.MustParseAddr("192.0.2.1"), Proto: nft.TCP, Port: 9},
		Target: netip.MustParseAddrPort("192.0.2.2:9"),
		Mark:   0xfffffffe,
	}
	if err := t.Add(e); err != nil {
		return fmt.Errorf("nftables map element: %w", err)
	}
	got, err := t.List()
	if err != nil {
		return fmt.Errorf("nftables map listing: %w", err)
	}
	if len(got) != 1 || got[0] != e {
		return fmt.Errorf("nftables map listing: read back %v, wrote %v", got, e)
	}
	if err := t.Delete(e.Key); err != nil {
		return fmt.Errorf("nftables map element removal: %w", err)
	}
	c, err := ct.Open(ct.Config{NetNS: cfg.NetNS})
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Marked(e.Mark); err != nil {
		return errors.Join(errors.New("conntrack netlink (nf_conntrack_netlink, Linux 4.20+ for filtered dumps)"), err)
	}
	return nil
}

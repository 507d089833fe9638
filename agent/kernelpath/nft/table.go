// Package nft owns nullnet's nftables table, the kernel half of the kernel fast path: a NAT
// prerouting chain whose one rule DNATs a client's flows to a replica by looking up the
// concatenation (saddr . l4proto . dport) in a map, and marks their conntrack entries with the
// net id through a second map with the same key. Everything goes through netlink
// (github.com/google/nftables); nothing outside the table is read or written.
//
// Layout (family ip, table "nullnet" or "nullnet_<suffix>"):
//
//	map dnat4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//	map mark4 { type ipv4_addr . inet_proto . inet_service : mark }
//	chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//	  ct mark set ip saddr . meta l4proto . th dport map @mark4
//	    dnat ip to ip saddr . meta l4proto . th dport map @dnat4 }
//
// A packet whose key is in neither map leaves the rule at the first lookup, untouched. A NAT
// chain sees only the first packet of a flow, so the mark and the translation are set once per
// conntrack entry and later packets follow conntrack.
package nft

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// DefaultTable is the production table name.
const DefaultTable = "nullnet"

const (
	chainName = "prerouting"
	dnatMap   = "dnat4"
	markMap   = "mark4"

	// Registers as the kernel numbers them: 1 is the first 16-byte register, 8+n the n-th
	// 4-byte one. A concatenation is loaded field by field into consecutive 4-byte registers.
	regKey   = 1  // saddr (NFT_REG32_00)
	regProto = 9  // l4proto (NFT_REG32_01); after the lookup, the target port
	regPort  = 10 // dport (NFT_REG32_02)

	// elemsPerMsg keeps each netlink message of a batch well below the socket buffer; the batch
	// as a whole is still one transaction.
	elemsPerMsg = 256
)

var tableNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,63}$`)

// Config configures a Table.
type Config struct {
	// Name of the table; DefaultTable when empty. Tests use "nullnet_<random>".
	Name string
	// NetNS is an fd of the network namespace to work in; 0 means the caller's.
	NetNS  int
	Logger hclog.Logger
}

// Table is nullnet's nftables table. Its methods are safe for concurrent use. The table keeps
// a copy of the entries it installed, so Add can replace an entry atomically and Delete of an
// unknown key is a no-op (the kernel would fail the whole batch on either).
type Table struct {
	log   hclog.Logger
	conn  *nftables.Conn
	table *nftables.Table
	chain *nftables.Chain
	dnat  *nftables.Set
	mark  *nftables.Set

	mu      sync.Mutex
	entries map[Key]Entry
}

// New opens a netlink connection for the table; it does not touch the kernel's rule set until
// Start or Ensure.
func New(cfg Config) (*Table, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultTable
	}
	if !tableNameRE.MatchString(cfg.Name) {
		return nil, fmt.Errorf("nftables table name %q: want a letter then up to 63 letters, digits or _", cfg.Name)
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if cfg.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(cfg.NetNS))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables netlink connection: %w", err)
	}
	keyType, err := nftables.ConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	if err != nil {
		return nil, err
	}
	targetType, err := nftables.ConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	if err != nil {
		return nil, err
	}
	tb := &nftables.Table{Name: cfg.Name, Family: nftables.TableFamilyIPv4}
	t := &Table{
		log:   cfg.Logger.Named("nft"),
		conn:  conn,
		table: tb,
		chain: &nftables.Chain{
			Name: chainName, Table: tb,
			Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting,
			Priority: nftables.ChainPriorityNATDest,
		},
		dnat:    &nftables.Set{Table: tb, Name: dnatMap, IsMap: true, Concatenation: true, KeyType: keyType, DataType: targetType},
		mark:    &nftables.Set{Table: tb, Name: markMap, IsMap: true, Concatenation: true, KeyType: keyType, DataType: nftables.TypeMark},
		entries: make(map[Key]Entry),
	}
	policy := nftables.ChainPolicyAccept
	t.chain.Policy = &policy
	return t, nil
}

// Name is the table's name.
func (t *Table) Name() string { return t.table.Name }

// Start removes a table of the same name left by an earlier instance (a crash leaves it in the
// kernel, still DNATing) and creates a fresh one. It returns the leftover entries, so that the
// caller can flush their conntrack entries (by mark): those keep their translation after the
// table is gone.
func (t *Table) Start() ([]Entry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	exists, err := t.exists()
	if err != nil {
		return nil, err
	}
	var leftovers []Entry
	if exists {
		leftovers, err = t.list()
		if err != nil {
			t.log.Warn("leftover table unreadable; removing it anyway", "table", t.table.Name, "error", err)
		}
		t.conn.DelTable(t.table)
		if err := t.conn.Flush(); err != nil {
			return nil, fmt.Errorf("removing leftover nftables table %s: %w", t.table.Name, err)
		}
		t.log.Info("removed leftover nftables table", "table", t.table.Name, "entries", len(leftovers))
	}
	clear(t.entries)
	return leftovers, t.ensure()
}

// Ensure creates the table, chain, maps and rule if any is missing, in one transaction, and
// keeps existing map elements. Calling it again is harmless.
func (t *Table) Ensure() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ensure()
}

func (t *Table) ensure() error {
	t.conn.AddTable(t.table)
	t.conn.AddChain(t.chain)
	if err := t.conn.AddSet(t.dnat, nil); err != nil {
		return err
	}
	if err := t.conn.AddSet(t.mark, nil); err != nil {
		return err
	}
	// Flushing the chain and adding the rule again in the same transaction keeps exactly one
	// rule however often Ensure runs; packets never see the chain empty.
	t.conn.FlushChain(t.chain)
	t.conn.AddRule(&nftables.Rule{Table: t.table, Chain: t.chain, Exprs: t.ruleExprs()})
	if err := t.conn.Flush(); err != nil {
		return fmt.Errorf("creating nftables table %s: %w", t.table.Name, err)
	}
	return nil
}

// ruleExprs is
// "ct mark set ip saddr . meta l4proto . th dport map @mark4
// dnat ip to ip saddr . meta l4proto . th dport map @dnat4".
func (t *Table) ruleExprs() []expr.Any {
	loadKey := []expr.Any{
		&expr.Payload{DestRegister: regKey, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: regProto},
		&expr.Payload{DestRegister: regPort, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
	var e []expr.Any
	e = append(e, loadKey...)
	e = append(e,
		&expr.Lookup{SourceRegister: regKey, DestRegister: regKey, IsDestRegSet: true, SetName: t.mark.Name, SetID: t.mark.ID},
		&expr.Ct{Key: expr.CtKeyMARK, Register: regKey, SourceRegister: true},
	)
	e = append(e, loadKey...)
	e = append(e,
		&expr.Lookup{SourceRegister: regKey, DestRegister: regKey, IsDestRegSet: true, SetName: t.dnat.Name, SetID: t.dnat.ID},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: regKey, RegProtoMin: regProto, Specified: true},
	)
	return e
}

// MaxBatch is the most entries one transaction carries. A transaction is sent in one sendmsg,
// which must fit the netlink socket's send buffer (net.core.wmem_default, 208 KiB by default;
// about 100 bytes per entry for both maps): 10,000 entries failed with EMSGSIZE.
const MaxBatch = 1024

// Add installs entries: up to MaxBatch in one transaction, so a packet sees all of them or
// none; a larger call is applied as several transactions in order. An entry whose key is
// installed already replaces it (delete and add in the same transaction). On error, the
// transactions before the failing one stay applied.
func (t *Table) Add(entries ...Entry) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	batch := make(map[Key]Entry, len(entries))
	for _, e := range entries {
		if err := e.validate(); err != nil {
			return fmt.Errorf("kernel path entry %s: %w", e, err)
		}
		batch[e.Key] = e
	}
	var added []Entry
	for _, e := range batch {
		if old, ok := t.entries[e.Key]; !ok || old != e {
			added = append(added, e)
		}
	}
	for chunk := range slices.Chunk(added, MaxBatch) {
		if err := t.add(chunk); err != nil {
			return err
		}
	}
	return nil
}

func (t *Table) add(added []Entry) error {
	var replaced []Entry
	for _, e := range added {
		if old, ok := t.entries[e.Key]; ok {
			replaced = append(replaced, old)
		}
	}
	if err := t.queueDelete(replaced); err != nil {
		return err
	}
	if err := t.queue(added, t.conn.SetAddElements); err != nil {
		return err
	}
	if err := t.conn.Flush(); err != nil {
		return fmt.Errorf("adding %d kernel path entries: %w", len(added), err)
	}
	for _, e := range added {
		t.entries[e.Key] = e
	}
	return nil
}

// Delete removes the entries of keys, up to MaxBatch per transaction; keys not installed are
// ignored. Flows already translated keep going until their conntrack entries are flushed.
func (t *Table) Delete(keys ...Key) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	seen := make(map[Key]bool, len(keys))
	var gone []Entry
	for _, k := range keys {
		if e, ok := t.entries[k]; ok && !seen[k] {
			seen[k] = true
			gone = append(gone, e)
		}
	}
	for chunk := range slices.Chunk(gone, MaxBatch) {
		err := t.queueDelete(chunk)
		if err == nil {
			err = t.conn.Flush()
		}
		if err != nil {
			return fmt.Errorf("deleting %d kernel path entries: %w", len(chunk), err)
		}
		for _, e := range chunk {
			delete(t.entries, e.Key)
		}
	}
	return nil
}

func (t *Table) queueDelete(entries []Entry) error {
	return t.queue(entries, t.conn.SetDeleteElements)
}

// queue adds the elements of entries to both maps, elemsPerMsg per netlink message.
func (t *Table) queue(entries []Entry, op func(*nftables.Set, []nftables.SetElement) error) error {
	for chunk := range slices.Chunk(entries, elemsPerMsg) {
		dnat := make([]nftables.SetElement, len(chunk))
		mark := make([]nftables.SetElement, len(chunk))
		for i, e := range chunk {
			k := encodeKey(e.Key)
			dnat[i] = nftables.SetElement{Key: k, Val: encodeTarget(e.Target)}
			mark[i] = nftables.SetElement{Key: k, Val: encodeMark(e.Mark)}
		}
		// mark first: the rule looks it up first, so a packet never finds a translation without
		// its mark (the transaction makes this moot, but the order costs nothing).
		if err := op(t.mark, mark); err != nil {
			return err
		}
		if err := op(t.dnat, dnat); err != nil {
			return err
		}
	}
	return nil
}

// List reads the entries from the kernel (not from the table's copy).
func (t *Table) List() ([]Entry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.list()
}

func (t *Table) list() ([]Entry, error) {
	dnat, err := t.conn.GetSetElements(t.dnat)
	if err != nil {
		return nil, fmt.Errorf("listing nftables map %s: %w", t.dnat.Name, err)
	}
	mark, err := t.conn.GetSetElements(t.mark)
	if err != nil {
		return nil, fmt.Errorf("listing nftables map %s: %w", t.mark.Name, err)
	}
	marks := make(map[Key]uint32, len(mark))
	var errs []error
	for _, el := range mark {
		k, err := decodeKey(el.Key)
		if err == nil {
			marks[k], err = decodeMark(el.Val)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	out := make([]Entry, 0, len(dnat))
	for _, el := range dnat {
		k, err := decodeKey(el.Key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		target, err := decodeTarget(el.Val)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
			continue
		}
		out = append(out, Entry{Key: k, Target: target, Mark: marks[k]})
	}
	return out, errors.Join(errs...)
}

// Stop removes the table (and with it every entry) and closes the netlink connection. Flows
// already translated keep their conntrack entries: flush them by mark.
func (t *Table) Stop() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	exists, err := t.exists()
	if err == nil && exists {
		t.conn.DelTable(t.table)
		err = t.conn.Flush()
	}
	clear(t.entries)
	if cerr := t.conn.CloseLasting(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("removing nftables table %s: %w", t.table.Name, err)
	}
	return nil
}

func (t *Table) exists() (bool, error) {
	tables, err := t.conn.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, fmt.Errorf("listing nftables tables: %w", err)
	}
	for _, tb := range tables {
		if tb.Name == t.table.Name {
			return true, nil
		}
	}
	return false, nil
}

// Package firewall installs wanreact's own iptables chains: the connection
// marking that balances new connections over the WANs and pins each one to
// the WAN it started on (mangle), and the optional per-WAN MASQUERADE (nat).
//
// The rules depend on the configuration only, never on WAN health: a
// failover changes routes (package actions), and the firewall stays byte
// for byte the same. The chains are written with one `iptables-restore
// --noflush` transaction per table at start, on a config reload that
// changes them, and when a periodic check (iptables-save) finds them
// missing or altered; nothing here runs on the failover path. Everything
// the package creates is named WANREACT_*; rules outside those chains are
// never touched, except the jumps into them. See docs/balancing.md for the
// packet path.
package firewall

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/wanreact/wanreact/actions"
	"github.com/wanreact/wanreact/config"
	"github.com/wanreact/wanreact/reactor"
)

// ChainPrefix starts the name of every chain the daemon owns. A chain with
// this prefix is the daemon's to rewrite or delete.
const ChainPrefix = "WANREACT_"

// Chain names.
const (
	ChainPre     = "WANREACT_PRE"     // mangle PREROUTING
	ChainOut     = "WANREACT_OUT"     // mangle OUTPUT
	ChainPost    = "WANREACT_POST"    // mangle POSTROUTING
	ChainSlot    = "WANREACT_SLOT"    // slot choice for forwarded connections
	ChainSlotOut = "WANREACT_SLOTOUT" // slot choice for the router's own connections
	ChainNAT     = "WANREACT_NAT"     // nat POSTROUTING
)

// WAN is what the firewall needs to know about one uplink.
type WAN struct {
	Name      string
	Interface string
	// Mark is the WAN's fwmark within Spec.Mask (reactor.Mark).
	Mark uint32
	// NAT adds `-o <Interface> -j MASQUERADE`.
	NAT bool
}

// Spec is the configuration the firewall is generated from.
type Spec struct {
	// Mask is routing.mark_mask: the only fwmark/connmark bits touched.
	Mask uint32
	// Slots is routing.slots; 0 leaves out the mangle chains.
	Slots int
	// LAN lists the interfaces whose new connections are balanced
	// (iptables syntax: a trailing + is a wildcard).
	LAN  []string
	WANs []WAN
}

// FromConfig derives the Spec of a configuration.
func FromConfig(c config.Config) Spec {
	s := Spec{Mask: c.Routing.MarkMask, Slots: c.Routing.Slots, LAN: append([]string(nil), c.LAN...)}
	for i, w := range c.WANs {
		s.WANs = append(s.WANs, WAN{Name: w.Name, Interface: w.Interface, Mark: reactor.Mark(c.Routing.MarkMask, i), NAT: w.NAT})
	}
	return s
}

// Enabled reports whether the spec needs any chain at all.
func (s Spec) Enabled() bool {
	if s.Slots > 0 {
		return true
	}
	for _, w := range s.WANs {
		if w.NAT {
			return true
		}
	}
	return false
}

// Table is the daemon's part of one iptables table.
type Table struct {
	Name   string
	Chains []Chain
	Jumps  []Jump
}

// Chain is one of our chains with its rules, each written the way
// iptables-save prints it after "-A <chain> ".
type Chain struct {
	Name  string
	Rules []string
}

// Jump is the rule in a built-in chain that enters one of ours.
type Jump struct {
	From, To string
	// First inserts the jump at the top of From (mangle: marks must be
	// right before the user's own rules look at them); otherwise it is
	// appended (nat: the user's own exemptions, e.g. for IPsec, keep
	// precedence over our MASQUERADE).
	First bool
}

// Rule is the jump's rule text as iptables-save prints it.
func (j Jump) Rule() string { return "-A " + j.From + " -j " + j.To }

// Ruleset is the whole generated firewall: mangle and nat, in that order.
// A table the spec does not need is present with no chains, which means
// "remove whatever of ours is there".
type Ruleset struct {
	Tables []Table
}

// Table returns the named table (empty if absent).
func (r Ruleset) Table(name string) Table {
	for _, t := range r.Tables {
		if t.Name == name {
			return t
		}
	}
	return Table{Name: name}
}

// ifaceRE is what an interface name may look like in the generated rules:
// anything else could inject text into iptables-restore's input.
var ifaceRE = regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,15}\+?$`)

// Ruleset generates the chains. The output is deterministic: the same spec
// always gives the same text, which is what lets a check compare it with
// iptables-save.
func (s Spec) Ruleset() (Ruleset, error) {
	if err := s.validate(); err != nil {
		return Ruleset{}, err
	}
	mangle := Table{Name: "mangle"}
	if s.Slots > 0 {
		mangle = s.mangle()
	}
	nat := Table{Name: "nat"}
	var masq []string
	for _, w := range s.WANs {
		if w.NAT {
			masq = append(masq, "-o "+w.Interface+" -j MASQUERADE")
		}
	}
	if len(masq) > 0 {
		nat.Chains = []Chain{{Name: ChainNAT, Rules: masq}}
		nat.Jumps = []Jump{{From: "POSTROUTING", To: ChainNAT}}
	}
	return Ruleset{Tables: []Table{mangle, nat}}, nil
}

func (s Spec) validate() error {
	if s.Slots < 0 {
		return fmt.Errorf("firewall: %d slots", s.Slots)
	}
	for _, l := range s.LAN {
		if !ifaceRE.MatchString(l) {
			return fmt.Errorf("firewall: LAN interface %q is not a name iptables takes", l)
		}
	}
	for _, w := range s.WANs {
		if !ifaceRE.MatchString(w.Interface) || strings.HasSuffix(w.Interface, "+") {
			return fmt.Errorf("firewall: WAN %s: interface %q is not a name iptables takes", w.Name, w.Interface)
		}
	}
	if s.Slots == 0 {
		return nil
	}
	wanRoom, slotRoom := config.MarkRoom(s.Mask)
	if s.Slots > slotRoom || len(s.WANs) > wanRoom {
		return fmt.Errorf("firewall: mark mask %#x has no room for %d WAN marks and %d slot marks", s.Mask, len(s.WANs), s.Slots)
	}
	for _, w := range s.WANs {
		if w.Mark == 0 || w.Mark&^s.Mask != 0 || w.Mark >= actions.SlotMark(s.Mask, 0) {
			return fmt.Errorf("firewall: WAN %s: mark %#x is not a WAN mark inside mask %#x", w.Name, w.Mark, s.Mask)
		}
	}
	return nil
}

// mangle builds the marking chains; see docs/balancing.md for the path a
// packet takes through them.
func (s Spec) mangle() Table {
	m := s.Mask
	unmarked := "-m mark ! --mark " + markArg(0, m) + " -j RETURN"
	restore := fmt.Sprintf("-j CONNMARK --restore-mark --nfmask %#x --ctmask %#x", m, m)
	// Only unicast destinations that are not the router itself: the
	// router's own services, broadcasts and multicast are never
	// balanced (a slot mark would reroute them to a WAN).
	newUnicast := "-m addrtype --dst-type UNICAST -m conntrack --ctstate NEW"

	var pre []string
	for _, w := range s.WANs {
		// A connection that starts on a WAN (port forward, a service of
		// the router) is pinned to it, so that the replies leave the way
		// the requests came. Only the connmark: the incoming packets
		// themselves must be routed by main (to the LAN or locally), not
		// by the WAN's table.
		pre = append(pre,
			"-i "+w.Interface+" -m conntrack --ctstate NEW -j CONNMARK --set-xmark "+markArg(w.Mark, m),
			"-i "+w.Interface+" -j RETURN",
		)
	}
	pre = append(pre, restore, unmarked)
	for _, l := range s.LAN {
		pre = append(pre, "-i "+l+" "+newUnicast+" -j "+ChainSlot)
	}

	out := []string{
		// A socket's own mark in our bits (SO_MARK: the prober) wins.
		unmarked,
		restore,
		unmarked,
		newUnicast + " -j " + ChainSlotOut,
	}

	post := []string{"-m connmark ! --mark " + markArg(0, m) + " -j RETURN"}
	for _, w := range s.WANs {
		// The first packet's actual way out decides the WAN, whatever
		// slot (or none) it had: that also pins connections that existed
		// before the daemon started and those routed by table A.
		post = append(post, "-o "+w.Interface+" -j CONNMARK --set-xmark "+markArg(w.Mark, m))
	}

	return Table{
		Name: "mangle",
		Chains: []Chain{
			{Name: ChainPre, Rules: pre},
			{Name: ChainOut, Rules: out},
			{Name: ChainPost, Rules: post},
			{Name: ChainSlot, Rules: slotRules(s.Slots, m)},
			{Name: ChainSlotOut, Rules: slotRules(s.Slots, m)},
		},
		Jumps: []Jump{
			{From: "PREROUTING", To: ChainPre, First: true},
			{From: "OUTPUT", To: ChainOut, First: true},
			{From: "POSTROUTING", To: ChainPost, First: true},
		},
	}
}

// slotRules gives each packet entering the chain one slot mark, round robin
// over n slots: every rule sees every packet, so the n nth counters advance
// together and exactly one rule matches. Round robin (rather than
// --mode random) makes the split exact over any n consecutive connections;
// the slots are visited in a fixed shuffled order so that a periodic pattern
// in the traffic (say two DNS queries before each connection) cannot keep
// hitting the same WAN.
func slotRules(n int, mask uint32) []string {
	out := make([]string, 0, n)
	for k, slot := range slotOrder(n) {
		out = append(out, fmt.Sprintf("-m statistic --mode nth --every %d --packet %d -j MARK --set-xmark %s",
			n, k, markArg(actions.SlotMark(mask, slot), mask)))
	}
	return out
}

// slotOrder is a fixed permutation of 0..n-1 (Fisher-Yates driven by a
// xorshift generator with a constant seed): deterministic, so the generated
// rules never change between runs or versions.
func slotOrder(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	x := uint32(0x9e3779b9)
	for i := n - 1; i > 0; i-- {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		j := int(x % uint32(i+1))
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// markArg writes value/mask the way iptables-save prints it.
func markArg(v, mask uint32) string {
	if mask == 0xffffffff {
		return fmt.Sprintf("%#x", v)
	}
	return fmt.Sprintf("%#x/%#x", v, mask)
}

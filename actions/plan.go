package actions

import (
	"fmt"
	"math"
	"math/bits"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/config"
	"github.com/wanreact/wanreact/reactor"
)

// Proto is the route, rule and address protocol number ("RTPROT") that marks
// everything wanreact installs. `ip` prints it as "proto 87" unless
// /etc/iproute2/rt_protos names it.
const Proto = 87

// Defaults used when a Desired leaves a number at zero (zero is never valid).
const (
	DefaultActiveTable  = 200
	DefaultRulePriority = 10000
	DefaultMarkMask     = 0xff00
)

// Offsets inside the daemon's block of rule priorities starting at P.
const (
	fromRuleOffset     = 0   // P+i: from <addr>/32 lookup T_i
	markRuleOffset     = 100 // P+100+i: fwmark lookup T_i
	suppressRuleOffset = 200 // P+200: lookup main suppress_prefixlength 0
	slotRuleOffset     = 201 // P+201+s: fwmark <slot mark> lookup slot table s
	activeRuleOffset   = 299 // P+299: lookup A, after every slot rule
	maxWANs            = 100 // P+i must stay below P+100
	// maxSlots keeps P+201+s below P+299 (config.MaxSlots).
	maxSlots = activeRuleOffset - slotRuleOffset
)

// DefaultSlotTable is the first slot table when SlotConfig.Table is zero.
const DefaultSlotTable = config.DefaultSlotTable

// SlotConfig is the balancing part of the configuration the reconciler
// needs besides Desired: how many slot tables (and slot rules) exist and
// where they start. The rules and tables exist for every configured slot
// whatever the active set, so that a failover only changes routes.
type SlotConfig struct {
	// Count is routing.slots; 0 means no balancing.
	Count int
	// Table is routing.slot_table: slot s uses table Table+s. 0 means
	// DefaultSlotTable.
	Table int
}

// SlotConfigFrom extracts the SlotConfig of a configuration.
func SlotConfigFrom(c config.Config) SlotConfig {
	return SlotConfig{Count: c.Routing.Slots, Table: c.Routing.SlotTable}
}

// Tables lists the slot tables, for cleanup.
func (s SlotConfig) Tables() []int {
	first := s.Table
	if first <= 0 {
		first = DefaultSlotTable
	}
	out := make([]int, 0, max(s.Count, 0))
	for i := range s.Count {
		out = append(out, first+i)
	}
	return out
}

// SlotMark is the fwmark of balancing slot s (0-based) within mask: the
// mask's values are split in two halves, WAN marks (reactor.Mark: 1, 2, ...)
// in the lower and slot marks in the upper one, so that with mask 0xff00
// slot 0 is 0x8000, slot 1 0x8100 and so on. It returns 0 when s does not
// fit or the mask is not one contiguous run of bits.
func SlotMark(mask uint32, s int) uint32 {
	_, room := config.MarkRoom(mask)
	if s < 0 || s >= room {
		return 0
	}
	shift := bits.TrailingZeros32(mask)
	return uint32(room+s) << shift
}

// ruleSpec is one IPv4 policy rule in a comparable form. Desired rules and
// kernel rules are both converted to it, so the diff is plain equality.
type ruleSpec struct {
	Priority int
	Src      netip.Prefix // invalid means "from all"
	HasMark  bool
	Mark     uint32
	Mask     uint32
	Table    int
	// SuppressPrefixlen is -1 when the rule has none.
	SuppressPrefixlen int
	// Extra describes attributes the daemon never sets (iif, dst, goto...).
	// A kernel rule with any of them never equals a desired rule.
	Extra string
}

func (r ruleSpec) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rule %d", r.Priority)
	if r.Src.IsValid() {
		fmt.Fprintf(&b, " from %s", r.Src)
	}
	if r.HasMark {
		fmt.Fprintf(&b, " fwmark %#x/%#x", r.Mark, r.Mask)
	}
	if r.Extra != "" {
		b.WriteString(" " + r.Extra)
	}
	fmt.Fprintf(&b, " lookup %s", tableName(r.Table))
	if r.SuppressPrefixlen >= 0 {
		fmt.Fprintf(&b, " suppress_prefixlength %d", r.SuppressPrefixlen)
	}
	return b.String()
}

func tableName(t int) string {
	switch t {
	case unix.RT_TABLE_MAIN:
		return "main"
	case unix.RT_TABLE_LOCAL:
		return "local"
	case unix.RT_TABLE_DEFAULT:
		return "default"
	}
	return fmt.Sprint(t)
}

// toKernel builds the netlink rule to add or delete. Protocol is always set:
// on delete the kernel then matches only a rule carrying our tag.
func (r ruleSpec) toKernel() *netlink.Rule {
	k := netlink.NewRule()
	k.Family = unix.AF_INET
	k.Priority = r.Priority
	k.Table = r.Table
	k.Protocol = Proto
	if r.Src.IsValid() {
		k.Src = prefixToIPNet(r.Src)
	}
	if r.HasMark {
		k.Mark = r.Mark
		m := r.Mask
		k.Mask = &m
	}
	k.SuppressPrefixlen = r.SuppressPrefixlen
	return k
}

// ruleFromKernel converts a dumped rule.
func ruleFromKernel(k netlink.Rule) ruleSpec {
	s := ruleSpec{Priority: k.Priority, Table: k.Table, SuppressPrefixlen: k.SuppressPrefixlen}
	if s.SuppressPrefixlen < 0 {
		s.SuppressPrefixlen = -1
	}
	if k.Src != nil {
		if p, ok := ipNetToPrefix(k.Src); ok {
			s.Src = p
		}
	}
	if k.Mark != 0 || k.Mask != nil {
		s.HasMark = true
		s.Mark = k.Mark
		s.Mask = 0xffffffff
		if k.Mask != nil {
			s.Mask = *k.Mask
		}
	}
	var extra []string
	if k.Dst != nil {
		extra = append(extra, "to "+k.Dst.String())
	}
	if k.Invert {
		extra = append(extra, "not")
	}
	if k.Tos != 0 {
		extra = append(extra, fmt.Sprintf("tos %#x", k.Tos))
	}
	if k.IifName != "" {
		extra = append(extra, "iif "+k.IifName)
	}
	if k.OifName != "" {
		extra = append(extra, "oif "+k.OifName)
	}
	if k.Goto >= 0 {
		extra = append(extra, fmt.Sprintf("goto %d", k.Goto))
	}
	if k.Flow >= 0 {
		extra = append(extra, fmt.Sprintf("realms %d", k.Flow))
	}
	if k.SuppressIfgroup >= 0 {
		extra = append(extra, fmt.Sprintf("suppress_ifgroup %d", k.SuppressIfgroup))
	}
	if k.IPProto != 0 {
		extra = append(extra, fmt.Sprintf("ipproto %d", k.IPProto))
	}
	if k.Sport != nil || k.Dport != nil {
		extra = append(extra, "ports")
	}
	if k.UIDRange != nil {
		extra = append(extra, "uidrange")
	}
	if k.TunID != 0 {
		extra = append(extra, fmt.Sprintf("tun_id %d", k.TunID))
	}
	s.Extra = strings.Join(extra, " ")
	return s
}

// routeKey is what the kernel treats as one route slot in an IPv4 table: a
// RTM_NEWROUTE with NLM_F_REPLACE for the same key swaps the route atomically.
type routeKey struct {
	Table  int
	Dst    netip.Prefix
	Tos    int
	Metric int
}

// routeSpec is one IPv4 route in a comparable form.
type routeSpec struct {
	Table     int
	Dst       netip.Prefix
	Gw        netip.Addr
	LinkIndex int
	Src       netip.Addr
	Scope     uint8
	Onlink    bool
	Metric    int
	Tos       int
	Type      int
	Protocol  int
	// Nexthops makes the route a multipath route; Gw, LinkIndex, Src and
	// Onlink are then unset.
	Nexthops []nexthop
	// Dev is the interface name, for messages only (not compared).
	Dev string
	// Extra describes attributes the daemon never sets (encap, metrics);
	// a kernel route with any of them never equals a desired one.
	Extra string
}

// nexthop is one path of a multipath route.
type nexthop struct {
	Gw        netip.Addr
	LinkIndex int
	Weight    int // 1..256
	Onlink    bool
	Dev       string // for messages only
}

func (n nexthop) same(o nexthop) bool {
	return n.Gw == o.Gw && n.LinkIndex == o.LinkIndex && n.Weight == o.Weight && n.Onlink == o.Onlink
}

func (r routeSpec) key() routeKey {
	return routeKey{Table: r.Table, Dst: r.Dst, Tos: r.Tos, Metric: r.Metric}
}

// same reports whether two routes are identical for our purposes.
func (r routeSpec) same(o routeSpec) bool {
	return r.Table == o.Table && r.Dst == o.Dst && r.Gw == o.Gw && r.LinkIndex == o.LinkIndex &&
		r.Src == o.Src && r.Scope == o.Scope && r.Onlink == o.Onlink && r.Metric == o.Metric &&
		r.Tos == o.Tos && r.Type == o.Type && r.Protocol == o.Protocol && r.Extra == o.Extra &&
		slices.EqualFunc(r.Nexthops, o.Nexthops, nexthop.same)
}

func (r routeSpec) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "route table %s ", tableName(r.Table))
	if r.Dst.Bits() == 0 {
		b.WriteString("default")
	} else {
		b.WriteString(r.Dst.String())
	}
	if r.Type != unix.RTN_UNICAST {
		fmt.Fprintf(&b, " type %d", r.Type)
	}
	for _, n := range r.Nexthops {
		b.WriteString(" nexthop")
		if n.Gw.IsValid() {
			fmt.Fprintf(&b, " via %s", n.Gw)
		}
		if n.Dev != "" {
			fmt.Fprintf(&b, " dev %s", n.Dev)
		} else {
			fmt.Fprintf(&b, " dev if%d", n.LinkIndex)
		}
		fmt.Fprintf(&b, " weight %d", n.Weight)
		if n.Onlink {
			b.WriteString(" onlink")
		}
	}
	if r.Gw.IsValid() {
		fmt.Fprintf(&b, " via %s", r.Gw)
	}
	switch {
	case r.Dev != "":
		fmt.Fprintf(&b, " dev %s", r.Dev)
	case r.LinkIndex != 0:
		fmt.Fprintf(&b, " dev if%d", r.LinkIndex)
	}
	if r.Scope == unix.RT_SCOPE_LINK {
		b.WriteString(" scope link")
	} else if r.Scope != unix.RT_SCOPE_UNIVERSE {
		fmt.Fprintf(&b, " scope %d", r.Scope)
	}
	if r.Src.IsValid() {
		fmt.Fprintf(&b, " src %s", r.Src)
	}
	if r.Metric != 0 {
		fmt.Fprintf(&b, " metric %d", r.Metric)
	}
	if r.Onlink {
		b.WriteString(" onlink")
	}
	if r.Extra != "" {
		b.WriteString(" " + r.Extra)
	}
	if r.Protocol != Proto {
		fmt.Fprintf(&b, " proto %d", r.Protocol)
	}
	return b.String()
}

func (r routeSpec) toKernel() *netlink.Route {
	k := &netlink.Route{
		Family:    netlink.FAMILY_V4,
		Table:     r.Table,
		Dst:       prefixToIPNet(r.Dst),
		LinkIndex: r.LinkIndex,
		Scope:     netlink.Scope(r.Scope),
		Protocol:  netlink.RouteProtocol(r.Protocol),
		Priority:  r.Metric,
		Tos:       r.Tos,
		Type:      r.Type,
	}
	if r.Gw.IsValid() {
		k.Gw = net.IP(r.Gw.AsSlice())
	}
	if r.Src.IsValid() {
		k.Src = net.IP(r.Src.AsSlice())
	}
	if r.Onlink {
		k.Flags = int(netlink.FLAG_ONLINK)
	}
	for _, n := range r.Nexthops {
		nh := &netlink.NexthopInfo{LinkIndex: n.LinkIndex, Hops: n.Weight - 1}
		if n.Gw.IsValid() {
			nh.Gw = net.IP(n.Gw.AsSlice())
		}
		if n.Onlink {
			nh.Flags = int(netlink.FLAG_ONLINK)
		}
		k.MultiPath = append(k.MultiPath, nh)
	}
	return k
}

// routeFromKernel converts a dumped IPv4 route. names maps ifindex to name
// for messages.
func routeFromKernel(k netlink.Route, names map[int]string) routeSpec {
	s := routeSpec{
		Table:     k.Table,
		LinkIndex: k.LinkIndex,
		Scope:     uint8(k.Scope),
		Onlink:    k.Flags&int(netlink.FLAG_ONLINK) != 0,
		Metric:    k.Priority,
		Tos:       k.Tos,
		Type:      k.Type,
		Protocol:  int(k.Protocol),
		Dev:       names[k.LinkIndex],
		Dst:       netip.PrefixFrom(netip.IPv4Unspecified(), 0),
	}
	if k.Dst != nil {
		if p, ok := ipNetToPrefix(k.Dst); ok {
			s.Dst = p
		}
	}
	s.Gw = ipToAddr(k.Gw)
	s.Src = ipToAddr(k.Src)
	var extra []string
	for _, nh := range k.MultiPath {
		s.Nexthops = append(s.Nexthops, nexthop{
			Gw: ipToAddr(nh.Gw), LinkIndex: nh.LinkIndex, Weight: nh.Hops + 1, Dev: names[nh.LinkIndex],
			// The kernel adds dead/linkdown flags of its own; only onlink
			// is ours.
			Onlink: nh.Flags&int(netlink.FLAG_ONLINK) != 0,
		})
		if nh.Encap != nil || nh.NewDst != nil || nh.Via != nil {
			extra = append(extra, "nexthop-encap")
		}
	}
	if k.Encap != nil {
		extra = append(extra, "encap")
	}
	if k.Via != nil {
		extra = append(extra, "via-family")
	}
	if k.MTU != 0 || k.AdvMSS != 0 || k.Hoplimit != 0 || k.InitCwnd != 0 || k.InitRwnd != 0 || k.Window != 0 {
		extra = append(extra, "metrics")
	}
	if k.Realm != 0 {
		extra = append(extra, fmt.Sprintf("realm %d", k.Realm))
	}
	s.Extra = strings.Join(extra, " ")
	return s
}

// linkState is what planning needs to know about a WAN interface.
type linkState struct {
	Index int
	Up    bool
}

// wantState is the full set of rules and routes a Desired maps to.
type wantState struct {
	Rules  []ruleSpec
	Routes []routeSpec
	// Tables are the tables the daemon owns: every WAN table, every slot
	// table and A. Any route of another protocol in them is reported.
	Tables map[int]bool
	Active int // the active table, to order its route last
}

// normalized returns P, A and the mark mask with defaults for zeros.
func normalized(d reactor.Desired) (prio, active int, mask uint32) {
	prio, active, mask = d.RulePriority, d.ActiveTable, d.MarkMask
	if prio <= 0 {
		prio = DefaultRulePriority
	}
	if active <= 0 {
		active = DefaultActiveTable
	}
	if mask == 0 {
		mask = DefaultMarkMask
	}
	return prio, active, mask
}

// validTable rejects the tables the kernel reserves (unspec, default, main,
// local) and values that do not fit a table id.
func validTable(t int) bool {
	switch t {
	case unix.RT_TABLE_UNSPEC, unix.RT_TABLE_DEFAULT, unix.RT_TABLE_MAIN, unix.RT_TABLE_LOCAL:
		return false
	}
	return t > 0 && int64(t) <= math.MaxUint32
}

// plan maps a Desired onto rules and routes. It is pure: links carries what
// the caller found in the kernel (interface name -> index; absent = no link).
// Problems in one WAN skip that WAN's objects and are returned as errors; the
// other WANs are still planned.
func plan(d reactor.Desired, links map[string]linkState, slots SlotConfig) (wantState, []error) {
	prio, activeTable, mask := normalized(d)
	w := wantState{Tables: map[int]bool{}, Active: activeTable}
	var errs []error
	if !validTable(activeTable) {
		errs = append(errs, fmt.Errorf("active table %d is reserved or invalid", activeTable))
		return w, errs
	}
	w.Tables[activeTable] = true

	// wanRoutes holds each installable WAN's default route, by name, for
	// the active table.
	defaults := map[string]routeSpec{}
	for i, wan := range d.WANs {
		if i >= maxWANs {
			errs = append(errs, fmt.Errorf("wan %s: more than %d WANs do not fit the rule priority block", wan.Name, maxWANs))
			break
		}
		if !validTable(wan.Table) || wan.Table == activeTable {
			errs = append(errs, fmt.Errorf("wan %s: table %d is reserved, invalid or the active table", wan.Name, wan.Table))
			continue
		}
		if w.Tables[wan.Table] {
			errs = append(errs, fmt.Errorf("wan %s: table %d is used by another WAN", wan.Name, wan.Table))
			continue
		}
		w.Tables[wan.Table] = true

		if wan.Mark&mask == 0 {
			// fwmark 0/mask matches every unmarked packet: installing it
			// would steer all traffic into this WAN.
			errs = append(errs, fmt.Errorf("wan %s: mark %#x has no bits inside mask %#x; fwmark rule not installed", wan.Name, wan.Mark, mask))
		} else {
			w.Rules = append(w.Rules, ruleSpec{
				Priority: prio + markRuleOffset + i, HasMark: true, Mark: wan.Mark & mask, Mask: mask,
				Table: wan.Table, SuppressPrefixlen: -1,
			})
		}
		if !wan.Ready {
			continue
		}
		routes, def, err := wanRoutes(wan, links[wan.Interface])
		if err != nil {
			errs = append(errs, fmt.Errorf("wan %s: %w", wan.Name, err))
			continue
		}
		addr := wan.Address.Addr()
		w.Rules = append(w.Rules, ruleSpec{
			Priority: prio + fromRuleOffset + i, Src: netip.PrefixFrom(addr, 32),
			Table: wan.Table, SuppressPrefixlen: -1,
		})
		w.Routes = append(w.Routes, routes...)
		defaults[wan.Name] = def
	}

	w.Rules = append(w.Rules, ruleSpec{Priority: prio + suppressRuleOffset, Table: unix.RT_TABLE_MAIN, SuppressPrefixlen: 0})
	rules, routes, err := slotRouting(d, slots, defaults, w.Tables, prio, mask)
	if err != nil {
		errs = append(errs, err)
	}
	w.Rules = append(w.Rules, rules...)
	w.Routes = append(w.Routes, routes...)
	w.Rules = append(w.Rules, ruleSpec{Priority: prio + activeRuleOffset, Table: activeTable, SuppressPrefixlen: -1})
	act, err := activeRoutes(d.Active, defaults, activeTable, slots.Count > 0)
	if err != nil {
		errs = append(errs, err)
	}
	w.Routes = append(w.Routes, act...)
	return w, errs
}

// slotRouting builds the balancing rules (one per configured slot, always)
// and routes (slot table s holds the default route of WAN d.Slots[s]).
// tables holds the WAN and active tables; the slot tables are added to it.
func slotRouting(d reactor.Desired, slots SlotConfig, defaults map[string]routeSpec, tables map[int]bool, prio int, mask uint32) ([]ruleSpec, []routeSpec, error) {
	if slots.Count <= 0 {
		return nil, nil, nil
	}
	first := slots.Table
	if first <= 0 {
		first = DefaultSlotTable
	}
	wanRoom, slotRoom := config.MarkRoom(mask)
	switch {
	case slots.Count > maxSlots:
		return nil, nil, fmt.Errorf("%d slots do not fit the rule priority block (at most %d); balancing not installed", slots.Count, maxSlots)
	case slots.Count > slotRoom || len(d.WANs) > wanRoom:
		return nil, nil, fmt.Errorf("mark mask %#x has no room for %d WAN marks and %d slot marks; balancing not installed", mask, len(d.WANs), slots.Count)
	}
	for s := range slots.Count {
		if t := first + s; !validTable(t) || tables[t] {
			return nil, nil, fmt.Errorf("slot table %d is reserved, invalid or used by a WAN or as the active table; balancing not installed", t)
		}
	}
	var (
		rules   []ruleSpec
		routes  []routeSpec
		skipped []string
	)
	for s := range slots.Count {
		table := first + s
		tables[table] = true
		rules = append(rules, ruleSpec{
			Priority: prio + slotRuleOffset + s, HasMark: true, Mark: SlotMark(mask, s), Mask: mask,
			Table: table, SuppressPrefixlen: -1,
		})
		if s >= len(d.Slots) {
			continue // no active WAN: the table stays empty, lookups fall through to A
		}
		def, ok := defaults[d.Slots[s]]
		if !ok {
			if !slices.Contains(skipped, d.Slots[s]) {
				skipped = append(skipped, d.Slots[s])
			}
			continue
		}
		def.Table = table
		routes = append(routes, def)
	}
	if len(skipped) > 0 {
		return rules, routes, fmt.Errorf("slot WAN(s) %s not ready or unknown; their slot tables are left empty", strings.Join(skipped, ","))
	}
	return rules, routes, nil
}

// wanRoutes builds the routes of one Ready WAN's table and returns its
// default route separately (table A reuses it).
func wanRoutes(wan reactor.WANRouting, link linkState) (routes []routeSpec, def routeSpec, err error) {
	if !wan.Address.IsValid() || !wan.Address.Addr().Is4() {
		return nil, def, fmt.Errorf("ready without an IPv4 address (%v)", wan.Address)
	}
	if wan.Gateway.IsValid() && !wan.Gateway.Is4() {
		return nil, def, fmt.Errorf("gateway %s is not IPv4", wan.Gateway)
	}
	if link.Index == 0 {
		return nil, def, fmt.Errorf("interface %q not found", wan.Interface)
	}
	addr := wan.Address.Addr()
	base := routeSpec{
		Table: wan.Table, LinkIndex: link.Index, Dev: wan.Interface, Src: addr,
		Type: unix.RTN_UNICAST, Protocol: Proto,
	}
	seen := map[routeKey]bool{}
	add := func(r routeSpec) {
		if seen[r.key()] {
			return // first one wins, e.g. an option-121 default after Gateway's
		}
		seen[r.key()] = true
		routes = append(routes, r)
	}
	// A /32 (typical for PPP) has no subnet to reach directly.
	if wan.Address.Bits() < 32 {
		r := base
		r.Dst = wan.Address.Masked()
		r.Scope = unix.RT_SCOPE_LINK
		add(r)
	}
	def = base
	def.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if wan.Gateway.IsValid() {
		def.Gw = wan.Gateway
		// onlink: the gateway needs no route of its own in this table, so
		// the default route does not depend on the order of installation.
		def.Onlink = true
	} else {
		def.Scope = unix.RT_SCOPE_LINK
	}
	add(def)
	for _, x := range wan.ExtraRoutes {
		if !x.Dst.IsValid() || !x.Dst.Addr().Is4() || (x.Gateway.IsValid() && !x.Gateway.Is4()) {
			return nil, def, fmt.Errorf("extra route %v via %v is not IPv4", x.Dst, x.Gateway)
		}
		r := base
		r.Dst = x.Dst.Masked()
		if x.Gateway.IsValid() {
			r.Gw = x.Gateway
			r.Onlink = true
		} else {
			r.Scope = unix.RT_SCOPE_LINK
		}
		add(r)
	}
	return routes, def, nil
}

// activeRoutes builds table A's content from the active set: the default
// route of the first active member that can be installed or, when
// balancing and several members can be installed, one weighted multipath
// route over them. The multipath route is what spreads the router's own
// unbound connections: the kernel picks a nexthop per flow hash and the
// source address from that nexthop's interface, and the "from" rule of that
// address then keeps the connection on its WAN.
func activeRoutes(active []reactor.ActiveMember, defaults map[string]routeSpec, table int, multipath bool) ([]routeSpec, error) {
	var (
		skipped []string
		usable  []routeSpec
		names   []string
		weights []int
	)
	for _, m := range active {
		def, ok := defaults[m.WAN]
		if !ok {
			skipped = append(skipped, m.WAN)
			continue
		}
		def.Table = table
		usable = append(usable, def)
		names = append(names, m.WAN)
		weights = append(weights, m.Weight)
	}
	switch {
	case len(usable) == 0 && len(skipped) > 0:
		return nil, fmt.Errorf("active WAN(s) %s not ready or unknown; active table left empty", strings.Join(skipped, ","))
	case len(usable) == 0:
		return nil, nil
	}
	if !multipath || len(usable) == 1 {
		var err error
		if len(skipped) > 0 {
			err = fmt.Errorf("active WAN(s) %s not ready or unknown; using %s", strings.Join(skipped, ","), names[0])
		}
		return usable[:1], err
	}
	var err error
	if len(skipped) > 0 {
		err = fmt.Errorf("active WAN(s) %s not ready or unknown; balancing over the others", strings.Join(skipped, ","))
	}
	mp := routeSpec{
		Table: table, Dst: usable[0].Dst, Type: unix.RTN_UNICAST, Protocol: Proto,
	}
	for i, u := range usable {
		mp.Nexthops = append(mp.Nexthops, nexthop{
			Gw: u.Gw, LinkIndex: u.LinkIndex, Dev: u.Dev, Onlink: u.Onlink, Weight: multipathWeight(weights[i], weights),
		})
	}
	return []routeSpec{mp}, err
}

// maxNexthopWeight is the largest multipath weight the kernel takes (the
// rtnh_hops byte plus one).
const maxNexthopWeight = 256

// multipathWeight maps a configured weight (1..1000) onto the kernel's
// 1..256, keeping the ratios when every weight already fits.
func multipathWeight(w int, all []int) int {
	top := slices.Max(all)
	w = max(w, 1)
	if top <= maxNexthopWeight {
		return w
	}
	return max(1, (w*maxNexthopWeight+top/2)/top)
}

// routeOp is one change to apply.
type routeOp struct {
	Replace bool // false: delete
	Spec    routeSpec
	Old     *routeSpec // the route a replace overwrites, if any
}

// ruleOps are the rule changes.
type ruleDiff struct {
	Add []ruleSpec
	Del []ruleSpec
}

// diffRules compares desired rules with the kernel's proto-87 rules. Extra
// identical kernel copies are deleted too (each delete removes one).
func diffRules(want []ruleSpec, have []ruleSpec) ruleDiff {
	var d ruleDiff
	count := map[ruleSpec]int{}
	for _, h := range have {
		count[h]++
	}
	wanted := map[ruleSpec]bool{}
	for _, r := range want {
		if wanted[r] {
			continue
		}
		wanted[r] = true
		if count[r] == 0 {
			d.Add = append(d.Add, r)
		}
	}
	for _, h := range have {
		if wanted[h] && count[h] == 1 {
			continue
		}
		if wanted[h] {
			count[h]-- // keep the last copy
		}
		d.Del = append(d.Del, h)
	}
	return d
}

// routeDiff is the route changes plus what was found that is not ours.
type routeDiff struct {
	Set     []routeOp // creations and replacements, in application order
	Del     []routeSpec
	Foreign []routeSpec // other protocols inside our tables
	Blocked []routeSpec // desired routes whose key a foreign route holds
}

// diffRoutes compares desired routes with the kernel's routes (all tables):
// proto-87 routes are ours wherever they are; other routes matter only inside
// our tables, where they are reported and never touched.
func diffRoutes(w wantState, kernel []routeSpec) routeDiff {
	var d routeDiff
	ours := map[routeKey][]routeSpec{}
	foreignKeys := map[routeKey]bool{}
	for _, k := range kernel {
		switch {
		case k.Protocol == Proto:
			ours[k.key()] = append(ours[k.key()], k)
		case w.Tables[k.Table]:
			d.Foreign = append(d.Foreign, k)
			foreignKeys[k.key()] = true
		}
	}
	wantKeys := map[routeKey]bool{}
	for _, r := range w.Routes {
		key := r.key()
		if wantKeys[key] {
			continue
		}
		wantKeys[key] = true
		have := ours[key]
		keep := -1
		for i, h := range have {
			if h.same(r) {
				keep = i
				break
			}
		}
		switch {
		case keep >= 0:
			for i, h := range have {
				if i != keep {
					d.Del = append(d.Del, h)
				}
			}
		case len(have) > 0:
			old := have[0]
			d.Set = append(d.Set, routeOp{Replace: true, Spec: r, Old: &old})
			d.Del = append(d.Del, have[1:]...)
		case foreignKeys[key]:
			// A replace would overwrite the user's route: leave it.
			d.Blocked = append(d.Blocked, r)
		default:
			d.Set = append(d.Set, routeOp{Replace: true, Spec: r})
		}
	}
	for key, have := range ours {
		if !wantKeys[key] {
			d.Del = append(d.Del, have...)
		}
	}
	// The WAN tables first: the active table's route is the one traffic
	// follows, and it must switch as one step after everything it may rely
	// on exists. Deterministic order otherwise, for stable logs.
	sort.SliceStable(d.Set, func(i, j int) bool {
		ai, aj := d.Set[i].Spec.Table == w.Active, d.Set[j].Spec.Table == w.Active
		if ai != aj {
			return !ai
		}
		return lessRoute(d.Set[i].Spec, d.Set[j].Spec)
	})
	sort.Slice(d.Del, func(i, j int) bool { return lessRoute(d.Del[i], d.Del[j]) })
	sort.Slice(d.Foreign, func(i, j int) bool { return lessRoute(d.Foreign[i], d.Foreign[j]) })
	return d
}

func lessRoute(a, b routeSpec) bool {
	if a.Table != b.Table {
		return a.Table < b.Table
	}
	if a.Dst != b.Dst {
		if a.Dst.Bits() != b.Dst.Bits() {
			return a.Dst.Bits() > b.Dst.Bits()
		}
		return a.Dst.Addr().Less(b.Dst.Addr())
	}
	if a.Metric != b.Metric {
		return a.Metric < b.Metric
	}
	return a.String() < b.String()
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ipNetToPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func ipToAddr(ip net.IP) netip.Addr {
	if ip == nil {
		return netip.Addr{}
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

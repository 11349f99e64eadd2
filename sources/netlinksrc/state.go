package netlinksrc

import (
	"cmp"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

// kind is one of the four object families, in the order a resync dumps them.
// Links go first so that, when routes are dumped, the tracker already knows
// which links are down (see routeAlias.doomed).
type kind uint8

const (
	kindLink kind = iota
	kindAddr
	kindRoute
	kindRule
	numKinds
)

func (k kind) String() string {
	return [...]string{"link", "addr", "route", "rule"}[k]
}

// fib_rule_hdr flags that the kernel flips on a rule after creating it
// (goto target resolved, iif/oif device gone). They are masked out of a
// rule's identity so that the RTM_DELRULE of such a rule still matches.
const (
	fibRuleUnresolved  = 0x4
	fibRuleIifDetached = 0x8
	fibRuleOifDetached = 0x10
)

// tracker is the source's model of the kernel objects it reports on. It
// turns messages into events with duplicate suppression and, on a resync,
// marks every object seen so that those not seen can be reported deleted.
// It is used by one goroutine only.
type tracker struct {
	emit        func(reactor.Event)
	routeFilter func(table int, dst netip.Prefix) bool
	ruleFilter  func(priority, table int) bool
	log         *slog.Logger

	// now stamps the events emitted while the current datagram is handled.
	now time.Time
	// gen is the generation of the resync in progress (or last completed);
	// every object seen since it started carries it.
	gen uint64
	// asserted[k] holds the keys of the kind-k objects emitted since the
	// dump of kind k began; nil while kind k is not being dumped.
	asserted [numKinds]map[any]struct{}

	links map[int]*linkEntry

	addrs        map[addrKey]uint64 // value: generation last seen
	addrRefs     map[reactor.AddrChange]int
	addrsPerLink map[int]int

	// routes mirrors the kernel's IPv4 FIB for the routes passing the
	// filter: per (table, dst, tos, priority) slot, the aliases in kernel
	// order, so that NLM_F_REPLACE/NLM_F_APPEND notifications can be
	// applied exactly as the kernel applied them.
	routes    map[routeSlot][]*routeAlias
	routeRefs map[reactor.RouteChange]int

	rules    map[string]*ruleEntry
	ruleRefs map[reactor.RuleChange]int
}

type linkEntry struct {
	state reactor.LinkChange
	gen   uint64
}

type addrKey struct {
	index int
	local netip.Addr
	plen  uint8
	peer  netip.Addr
}

func (k addrKey) payload() reactor.AddrChange {
	return reactor.AddrChange{Index: k.index, Prefix: netip.PrefixFrom(k.local, int(k.plen))}
}

type routeSlot struct {
	table    int
	dst      netip.Prefix
	tos      uint8
	priority uint32
}

type routeAlias struct {
	typ, scope, protocol uint8
	prefsrc              netip.Addr
	nhs                  []nexthop
	gen                  uint64
}

type ruleEntry struct {
	payload reactor.RuleChange
	gen     uint64
}

func newTracker(emit func(reactor.Event), routeFilter func(int, netip.Prefix) bool, ruleFilter func(int, int) bool, log *slog.Logger) *tracker {
	return &tracker{
		emit:         emit,
		routeFilter:  routeFilter,
		ruleFilter:   ruleFilter,
		log:          log,
		links:        map[int]*linkEntry{},
		addrs:        map[addrKey]uint64{},
		addrRefs:     map[reactor.AddrChange]int{},
		addrsPerLink: map[int]int{},
		routes:       map[routeSlot][]*routeAlias{},
		routeRefs:    map[reactor.RouteChange]int{},
		rules:        map[string]*ruleEntry{},
		ruleRefs:     map[reactor.RuleChange]int{},
	}
}

// send emits one event. key identifies the object for the resync
// bookkeeping; it is ignored for deletions.
func (t *tracker) send(k kind, key any, p reactor.Payload, deleted bool) {
	if !deleted && t.asserted[k] != nil {
		t.asserted[k][key] = struct{}{}
	}
	t.emit(reactor.Event{Time: t.now, Data: p})
}

// handle applies one rtnetlink message. fromDump is true for the parts of a
// dump this source requested, false for multicast notifications.
func (t *tracker) handle(m nlmsg, fromDump bool) error {
	switch m.typ {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		return t.handleLink(m)
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		return t.handleAddr(m)
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		return t.handleRoute(m, fromDump)
	case unix.RTM_NEWRULE, unix.RTM_DELRULE:
		return t.handleRule(m)
	}
	// NLMSG_NOOP and families we did not subscribe to.
	return nil
}

// --- links ---

func (t *tracker) handleLink(m nlmsg) error {
	lm, err := decodeLink(m.data)
	if err != nil {
		return err
	}
	// The bridge driver sends AF_BRIDGE RTM_NEWLINK/RTM_DELLINK about its
	// ports on the same group; a DELLINK there means "left the bridge",
	// not "interface deleted".
	if lm.family != unix.AF_UNSPEC {
		return nil
	}
	if m.typ == unix.RTM_DELLINK {
		t.linkGone(lm.index)
		return nil
	}
	st := reactor.LinkChange{
		Index:   lm.index,
		AdminUp: lm.flags&unix.IFF_UP != 0,
		Carrier: lm.flags&unix.IFF_LOWER_UP != 0,
	}
	// ppp and some tunnel drivers never leave IF_OPER_UNKNOWN; their
	// carrier is then the best evidence of operational state.
	st.OperUp = lm.operState == operUp || (lm.operState == operUnknown && st.Carrier)

	e := t.links[lm.index]
	if e != nil {
		e.gen = t.gen
		// A partial message (wireless event) says nothing about what
		// it lacks: keep what we knew.
		if !lm.hasOperState {
			st.OperUp = e.state.OperUp && st.Carrier
		}
		// Most RTM_NEWLINKs are about statistics, MTU, addresses of
		// other families...: compare without allocating the name.
		if e.state.AdminUp == st.AdminUp && e.state.Carrier == st.Carrier && e.state.OperUp == st.OperUp &&
			(!lm.hasName || e.state.Name == string(lm.name)) {
			return nil
		}
	}
	st.Name = string(lm.name)
	if !lm.hasName && e != nil {
		st.Name = e.state.Name
	}
	wasUp := e != nil && e.state.AdminUp
	if e == nil {
		e = &linkEntry{gen: t.gen}
		t.links[lm.index] = e
	}
	e.state = st
	t.send(kindLink, st.Index, st, false)
	switch {
	case wasUp && !st.AdminUp:
		t.flushVia(lm.index, flushDown)
	case !wasUp && st.AdminUp:
		t.reviveVia(lm.index)
	}
	return nil
}

// linkGone reports a deleted link and drops what the kernel drops with it.
func (t *tracker) linkGone(index int) {
	e := t.links[index]
	if e == nil {
		return
	}
	t.send(kindLink, index, reactor.LinkChange{Index: index, Name: e.state.Name, Deleted: true}, true)
	t.flushVia(index, flushUnregister)
	var gone []addrKey
	for k := range t.addrs {
		if k.index == index {
			gone = append(gone, k)
		}
	}
	sortAddrKeys(gone)
	for _, k := range gone {
		t.addrGone(k) // before forgetting the link, so the events carry its name
	}
	delete(t.links, index)
}

func (t *tracker) linkDown(index int) bool {
	e := t.links[index]
	return e != nil && !e.state.AdminUp
}

func (t *tracker) linkName(index int) string {
	if e := t.links[index]; e != nil {
		return e.state.Name
	}
	return ""
}

// --- addresses ---

func (t *tracker) handleAddr(m nlmsg) error {
	am, err := decodeAddr(m.data)
	if err != nil {
		return err
	}
	if am.family != unix.AF_INET {
		return nil
	}
	k := addrKey{index: am.index, local: am.local, plen: am.prefixLen, peer: am.peer}
	if m.typ == unix.RTM_DELADDR {
		if _, ok := t.addrs[k]; ok {
			t.addrGone(k)
		}
		return nil
	}
	if _, ok := t.addrs[k]; ok {
		// Lifetime refreshes (DHCP renewals) and flag changes land here.
		t.addrs[k] = t.gen
		return nil
	}
	t.addrs[k] = t.gen
	t.addrsPerLink[k.index]++
	p := k.payload()
	t.addrRefs[p]++
	if t.addrRefs[p] == 1 {
		t.sendAddr(p, false)
	}
	return nil
}

func (t *tracker) sendAddr(p reactor.AddrChange, deleted bool) {
	key := p
	p.Name = t.linkName(p.Index)
	p.Deleted = deleted
	t.send(kindAddr, key, p, deleted)
}

// addrGone removes an address and mirrors the routes the kernel flushes
// without notification when an address goes (fib_del_ifaddr and
// fib_inetaddr_event in net/ipv4/fib_frontend.c).
func (t *tracker) addrGone(k addrKey) {
	delete(t.addrs, k)
	p := k.payload()
	if t.addrRefs[p]--; t.addrRefs[p] <= 0 {
		delete(t.addrRefs, p)
		t.sendAddr(p, true)
	}
	if t.addrsPerLink[k.index]--; t.addrsPerLink[k.index] <= 0 {
		delete(t.addrsPerLink, k.index)
		// Last IPv4 address of the device: the kernel disables IPv4 on
		// it and flushes every route through it.
		t.flushVia(k.index, flushForce)
	}
	for o := range t.addrs {
		if o.local == k.local {
			return // still a local address: the kernel keeps its routes
		}
	}
	t.flushPrefsrc(k.local)
}

// --- routes ---

func (t *tracker) handleRoute(m nlmsg, fromDump bool) error {
	rm, err := decodeRoute(m.data)
	if err != nil {
		return err
	}
	if rm.family != unix.AF_INET || rm.flags&unix.RTM_F_CLONED != 0 {
		return nil
	}
	if t.routeFilter != nil && !t.routeFilter(rm.table, rm.dst) {
		return nil
	}
	nhs, err := rm.nexthops()
	if err != nil {
		return err
	}
	slot := routeSlot{table: rm.table, dst: rm.dst, tos: rm.tos, priority: rm.priority}
	a := &routeAlias{typ: rm.typ, scope: rm.scope, protocol: rm.protocol, prefsrc: rm.prefsrc, nhs: nhs, gen: t.gen}
	if m.typ == unix.RTM_DELROUTE {
		t.removeAlias(slot, a)
		return nil
	}
	if t.doomed(a) {
		return nil
	}
	list := t.routes[slot]
	if !fromDump && m.flags&unix.NLM_F_REPLACE != 0 && len(list) > 0 {
		// The kernel replaced the first alias of the slot (fa_first in
		// fib_table_insert). Reference the new one before releasing
		// the old so that an unchanged nexthop is not reported gone.
		old := list[0]
		list[0] = a
		t.refRoute(slot, a)
		t.unrefRoute(slot, old)
		return nil
	}
	for _, b := range list {
		if b.sameRoute(a) {
			b.gen = t.gen
			b.nhs = a.nhs // refresh RTNH_F_DEAD flags
			return nil
		}
	}
	if fromDump || m.flags&unix.NLM_F_APPEND != 0 {
		list = append(list, a)
	} else {
		// Without NLM_F_APPEND the kernel inserts before the slot's
		// existing aliases ("ip route prepend").
		list = append([]*routeAlias{a}, list...)
	}
	t.routes[slot] = list
	t.refRoute(slot, a)
	return nil
}

// sameRoute reports whether two aliases of one slot are the same kernel
// route (fa_type and fib_info equality in fib_table_insert, less metrics).
func (a *routeAlias) sameRoute(b *routeAlias) bool {
	if a.typ != b.typ || a.scope != b.scope || a.protocol != b.protocol || a.prefsrc != b.prefsrc || len(a.nhs) != len(b.nhs) {
		return false
	}
	for i := range a.nhs {
		if a.nhs[i].gw != b.nhs[i].gw || a.nhs[i].oif != b.nhs[i].oif {
			return false
		}
	}
	return true
}

// doomed reports a route the kernel is about to flush: all its nexthops are
// dead, or go through links that are administratively down. The kernel
// refuses to add such routes, so one can only be seen in the short window
// between a link going down and the flush, e.g. in a dump racing the
// RTM_NEWLINK; recording it would leave a route the kernel drops silently.
func (t *tracker) doomed(a *routeAlias) bool {
	if len(a.nhs) == 0 {
		return false
	}
	for _, nh := range a.nhs {
		if nh.flags&unix.RTNH_F_DEAD == 0 && (a.scope == unix.RT_SCOPE_HOST || !t.linkDown(nh.oif)) {
			return false
		}
	}
	return true
}

// eachPayload calls f with the RouteChange of every nexthop of the alias
// (one without gateway nor interface for blackhole/unreachable routes).
func (a *routeAlias) eachPayload(s routeSlot, f func(reactor.RouteChange)) {
	p := reactor.RouteChange{Table: s.table, Dst: s.dst, Protocol: int(a.protocol)}
	if len(a.nhs) == 0 {
		f(p)
		return
	}
	for _, nh := range a.nhs {
		p.Gateway, p.Index = nh.gw, nh.oif
		f(p)
	}
}

func (t *tracker) refRoute(s routeSlot, a *routeAlias) {
	a.eachPayload(s, func(p reactor.RouteChange) {
		t.routeRefs[p]++
		if t.routeRefs[p] == 1 {
			t.send(kindRoute, p, p, false)
		}
	})
}

func (t *tracker) unrefRoute(s routeSlot, a *routeAlias) {
	a.eachPayload(s, func(p reactor.RouteChange) {
		if t.routeRefs[p]--; t.routeRefs[p] <= 0 {
			delete(t.routeRefs, p)
			d := p
			d.Deleted = true
			t.send(kindRoute, p, d, true)
		}
	})
}

func (t *tracker) removeAlias(s routeSlot, a *routeAlias) {
	list := t.routes[s]
	for i, b := range list {
		if b.sameRoute(a) {
			t.dropAlias(s, i)
			return
		}
	}
}

// dropAlias removes the i-th alias of slot s and reports what vanished.
func (t *tracker) dropAlias(s routeSlot, i int) {
	list := t.routes[s]
	a := list[i]
	list = slices.Delete(list, i, i+1)
	if len(list) == 0 {
		delete(t.routes, s)
	} else {
		t.routes[s] = list
	}
	t.unrefRoute(s, a)
}

// flushMode says which kernel path is being mirrored.
type flushMode uint8

const (
	// flushDown: NETDEV_DOWN (link set down). Nexthops through the link
	// die except those of host-scope routes; a route goes when all its
	// nexthops are dead.
	flushDown flushMode = iota
	// flushForce: last IPv4 address removed (fib_disable_ip with force):
	// like flushDown, host-scope routes included.
	flushForce
	// flushUnregister: link deleted. Any route with a nexthop through it
	// goes.
	flushUnregister
)

// flushVia mirrors fib_sync_down_dev + fib_flush: the kernel removes IPv4
// routes through a link that goes down or away without sending
// RTM_DELROUTE, so the source reports them deleted itself.
func (t *tracker) flushVia(index int, mode flushMode) {
	type victim struct {
		s routeSlot
		a *routeAlias
	}
	var victims []victim
	for s, list := range t.routes {
		for _, a := range list {
			if a.dies(index, mode) {
				victims = append(victims, victim{s, a})
			}
		}
	}
	slices.SortFunc(victims, func(x, y victim) int { return compareSlots(x.s, y.s) })
	for _, v := range victims {
		if i := slices.Index(t.routes[v.s], v.a); i >= 0 {
			t.dropAlias(v.s, i)
		}
	}
}

// dies marks the alias's nexthops through index dead as the kernel would,
// and reports whether the whole route is flushed.
func (a *routeAlias) dies(index int, mode flushMode) bool {
	hit := false
	for i := range a.nhs {
		nh := &a.nhs[i]
		if nh.oif != index {
			continue
		}
		hit = true
		if mode == flushUnregister {
			return true
		}
		if mode == flushDown && a.scope == unix.RT_SCOPE_HOST {
			continue // fib_nh_scope RT_SCOPE_NOWHERE survives a non-forced sync
		}
		nh.flags |= unix.RTNH_F_DEAD
	}
	if !hit {
		return false
	}
	for _, nh := range a.nhs {
		if nh.flags&unix.RTNH_F_DEAD == 0 {
			return false
		}
	}
	return true
}

// reviveVia mirrors fib_sync_up: nexthops through a link coming back up are
// alive again (only matters for multipath routes that survived).
func (t *tracker) reviveVia(index int) {
	for _, list := range t.routes {
		for _, a := range list {
			for i := range a.nhs {
				if a.nhs[i].oif == index {
					a.nhs[i].flags &^= unix.RTNH_F_DEAD
				}
			}
		}
	}
}

// flushPrefsrc mirrors fib_sync_down_addr: main-table routes whose
// preferred source was an address that is no longer local are flushed.
func (t *tracker) flushPrefsrc(ip netip.Addr) {
	type victim struct {
		s routeSlot
		a *routeAlias
	}
	var victims []victim
	for s, list := range t.routes {
		if s.table != unix.RT_TABLE_MAIN {
			continue
		}
		for _, a := range list {
			if a.prefsrc == ip {
				victims = append(victims, victim{s, a})
			}
		}
	}
	slices.SortFunc(victims, func(x, y victim) int { return compareSlots(x.s, y.s) })
	for _, v := range victims {
		if i := slices.Index(t.routes[v.s], v.a); i >= 0 {
			t.dropAlias(v.s, i)
		}
	}
}

// --- rules ---

func (t *tracker) handleRule(m nlmsg) error {
	rm, err := decodeRule(m.data)
	if err != nil {
		return err
	}
	if rm.family != unix.AF_INET {
		return nil
	}
	if t.ruleFilter != nil && !t.ruleFilter(int(rm.priority), int(rm.table)) {
		return nil
	}
	// A rule has no id: the kernel matches deletions on every field. The
	// message body, less the flags the kernel flips on its own, is that
	// identity, and costs nothing to derive.
	key := slices.Clone(m.data) // decodeRule checked len >= sizeofFibRuleHdr
	flags := binary.NativeEndian.Uint32(key[8:12])
	binary.NativeEndian.PutUint32(key[8:12], flags&^(fibRuleUnresolved|fibRuleIifDetached|fibRuleOifDetached))
	e := t.rules[string(key)]
	if m.typ == unix.RTM_DELRULE {
		if e != nil {
			t.ruleGone(string(key), e)
		}
		return nil
	}
	if e != nil {
		e.gen = t.gen
		return nil
	}
	p := reactor.RuleChange{Priority: int(rm.priority), Table: int(rm.table), Mark: rm.mark, Protocol: int(rm.protocol)}
	t.rules[string(key)] = &ruleEntry{payload: p, gen: t.gen}
	t.ruleRefs[p]++
	if t.ruleRefs[p] == 1 {
		t.send(kindRule, p, p, false)
	}
	return nil
}

func (t *tracker) ruleGone(key string, e *ruleEntry) {
	delete(t.rules, key)
	p := e.payload
	if t.ruleRefs[p]--; t.ruleRefs[p] <= 0 {
		delete(t.ruleRefs, p)
		d := p
		d.Deleted = true
		t.send(kindRule, p, d, true)
	}
}

// --- resync ---

// beginResync starts a new generation: from now on, every object seen
// (dumped or notified) is marked with it.
func (t *tracker) beginResync() { t.gen++ }

// beginDump starts the dump of one kind.
func (t *tracker) beginDump(k kind) { t.asserted[k] = map[any]struct{}{} }

// endDump completes the dump of one kind: objects not seen since the
// resync began are gone (their deletion was lost with the overflowed
// notifications) and are reported deleted; objects seen but not emitted
// during the dump are emitted again so that the consumer gets the full
// current state.
func (t *tracker) endDump(k kind) {
	switch k {
	case kindLink:
		var gone []int
		for i, e := range t.links {
			if e.gen != t.gen {
				gone = append(gone, i)
			}
		}
		slices.Sort(gone)
		for _, i := range gone {
			t.linkGone(i)
		}
		idx := make([]int, 0, len(t.links))
		for i := range t.links {
			if _, ok := t.asserted[k][i]; !ok {
				idx = append(idx, i)
			}
		}
		slices.Sort(idx)
		for _, i := range idx {
			t.send(k, i, t.links[i].state, false)
		}
	case kindAddr:
		var gone []addrKey
		for a, g := range t.addrs {
			if g != t.gen {
				gone = append(gone, a)
			}
		}
		sortAddrKeys(gone)
		for _, a := range gone {
			if _, ok := t.addrs[a]; ok {
				t.addrGone(a)
			}
		}
		var again []reactor.AddrChange
		for p := range t.addrRefs {
			if _, ok := t.asserted[k][p]; !ok {
				again = append(again, p)
			}
		}
		slices.SortFunc(again, func(x, y reactor.AddrChange) int {
			return cmp.Or(cmp.Compare(x.Index, y.Index), x.Prefix.Addr().Compare(y.Prefix.Addr()), cmp.Compare(x.Prefix.Bits(), y.Prefix.Bits()))
		})
		for _, p := range again {
			t.sendAddr(p, false)
		}
	case kindRoute:
		type victim struct {
			s routeSlot
			a *routeAlias
		}
		var victims []victim
		for s, list := range t.routes {
			for _, a := range list {
				if a.gen != t.gen {
					victims = append(victims, victim{s, a})
				}
			}
		}
		slices.SortFunc(victims, func(x, y victim) int { return compareSlots(x.s, y.s) })
		for _, v := range victims {
			if i := slices.Index(t.routes[v.s], v.a); i >= 0 {
				t.dropAlias(v.s, i)
			}
		}
		var again []reactor.RouteChange
		for p := range t.routeRefs {
			if _, ok := t.asserted[k][p]; !ok {
				again = append(again, p)
			}
		}
		slices.SortFunc(again, compareRouteChanges)
		for _, p := range again {
			t.send(k, p, p, false)
		}
	case kindRule:
		var gone []string
		for key, e := range t.rules {
			if e.gen != t.gen {
				gone = append(gone, key)
			}
		}
		slices.Sort(gone)
		for _, key := range gone {
			t.ruleGone(key, t.rules[key])
		}
		var again []reactor.RuleChange
		for p := range t.ruleRefs {
			if _, ok := t.asserted[k][p]; !ok {
				again = append(again, p)
			}
		}
		slices.SortFunc(again, func(x, y reactor.RuleChange) int {
			return cmp.Or(cmp.Compare(x.Priority, y.Priority), cmp.Compare(x.Table, y.Table), cmp.Compare(x.Mark, y.Mark), cmp.Compare(x.Protocol, y.Protocol))
		})
		for _, p := range again {
			t.send(k, p, p, false)
		}
	}
	t.asserted[k] = nil
}

func compareSlots(x, y routeSlot) int {
	return cmp.Or(cmp.Compare(x.table, y.table), x.dst.Addr().Compare(y.dst.Addr()),
		cmp.Compare(x.dst.Bits(), y.dst.Bits()), cmp.Compare(x.tos, y.tos), cmp.Compare(x.priority, y.priority))
}

func compareRouteChanges(x, y reactor.RouteChange) int {
	return cmp.Or(cmp.Compare(x.Table, y.Table), x.Dst.Addr().Compare(y.Dst.Addr()), cmp.Compare(x.Dst.Bits(), y.Dst.Bits()),
		x.Gateway.Compare(y.Gateway), cmp.Compare(x.Index, y.Index), cmp.Compare(x.Protocol, y.Protocol))
}

func sortAddrKeys(ks []addrKey) {
	slices.SortFunc(ks, func(x, y addrKey) int {
		return cmp.Or(cmp.Compare(x.index, y.index), x.local.Compare(y.local), cmp.Compare(x.plen, y.plen), x.peer.Compare(y.peer))
	})
}

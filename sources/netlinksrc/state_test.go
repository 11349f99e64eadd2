package netlinksrc

import (
	"log/slog"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

// These tests drive the tracker with hand-built kernel messages; the netns
// tests check the same behaviour against the real kernel.

type sink struct{ events []reactor.Event }

func (s *sink) emit(e reactor.Event) { s.events = append(s.events, e) }

// take returns the payloads emitted since the last take.
func (s *sink) take() []reactor.Payload {
	var out []reactor.Payload
	for _, e := range s.events {
		out = append(out, e.Data)
	}
	s.events = nil
	return out
}

func newTestTracker(rf func(int, netip.Prefix) bool, ruf func(int, int) bool) (*tracker, *sink) {
	s := &sink{}
	t := newTracker(s.emit, rf, ruf, slog.New(slog.DiscardHandler))
	t.now = time.Unix(1700000000, 0)
	return t, s
}

func (t *tracker) feed(tb testing.TB, typ, flags uint16, body []byte, fromDump bool) {
	tb.Helper()
	if err := t.handle(nlmsg{typ: typ, flags: flags, data: body}, fromDump); err != nil {
		tb.Fatalf("handle(%d): %v", typ, err)
	}
}

func expect(tb testing.TB, s *sink, want ...reactor.Payload) {
	tb.Helper()
	got := s.take()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("emitted:\n  %+v\nwant:\n  %+v", got, want)
	}
}

var (
	gw1  = netip.MustParseAddr("192.0.2.1")
	gw2  = netip.MustParseAddr("192.0.2.2")
	gw3  = netip.MustParseAddr("192.0.2.3")
	any4 = netip.MustParsePrefix("0.0.0.0/0")
)

const (
	up                   = unix.IFF_UP | unix.IFF_RUNNING | unix.IFF_LOWER_UP
	create               = unix.NLM_F_CREATE | unix.NLM_F_EXCL
	ifOperDown           = 2
	ifOperLowerLayerDown = 3
	ifOperDormant        = 5
)

func TestLinkDuplicateSuppression(t *testing.T) {
	tr, s := newTestTracker(nil, nil)
	tr.feed(t, unix.RTM_NEWLINK, 0, linkBody(0, 2, up, "wan0", operUp, 1500), false)
	expect(t, s, reactor.LinkChange{Index: 2, Name: "wan0", AdminUp: true, Carrier: true, OperUp: true})

	// MTU change and a repeat: nothing.
	tr.feed(t, unix.RTM_NEWLINK, 0, linkBody(0, 2, up, "wan0", operUp, 1400), false)
	tr.feed(t, unix.RTM_NEWLINK, 0, linkBody(0, 2, up, "wan0", operUp, 1400), false)
	expect(t, s)

	// Carrier loss.
	tr.feed(t, unix.RTM_NEWLINK, 0, linkBody(0, 2, unix.IFF_UP, "wan0", ifOperLowerLayerDown, 1400), false)
	expect(t, s, reactor.LinkChange{Index: 2, Name: "wan0", AdminUp: true})

	// ppp style: operstate UNKNOWN with carrier counts as operationally up.
	tr.feed(t, unix.RTM_NEWLINK, 0, linkBody(0, 3, up, "ppp0", operUnknown, 1492), false)
	expect(t, s, reactor.LinkChange{Index: 3, Name: "ppp0", AdminUp: true, Carrier: true, OperUp: true})

	// Rename.
	tr.feed(t, unix.RTM_NEWLINK, 0, linkBody(0, 3, up, "pppoe-wan", operUnknown, 1492), false)
	expect(t, s, reactor.LinkChange{Index: 3, Name: "pppoe-wan", AdminUp: true, Carrier: true, OperUp: true})

	// Wi-Fi associated but not yet authorized: DORMANT is not up. The
	// wireless extensions then send partial RTM_NEWLINKs (flags and name,
	// no operstate), which must not be read as "operstate unknown".
	tr.feed(t, unix.RTM_NEWLINK, 0, linkBody(0, 4, up, "wlan0", ifOperDormant, 1500), false)
	expect(t, s, reactor.LinkChange{Index: 4, Name: "wlan0", AdminUp: true, Carrier: true})
	tr.feed(t, unix.RTM_NEWLINK, 0, cat(linkBody(0, 4, up, "", 0, 0)[:unix.SizeofIfInfomsg], attr(unix.IFLA_IFNAME, []byte("wlan0\x00"))), false)
	tr.feed(t, unix.RTM_NEWLINK, 0, linkBody(0, 4, up, "wlan0", ifOperDormant, 1500)[:unix.SizeofIfInfomsg], false)
	expect(t, s)

	// A bridge-port message (AF_BRIDGE) is not about the interface itself.
	tr.feed(t, unix.RTM_DELLINK, 0, linkBody(unix.AF_BRIDGE, 2, up, "wan0", operUp, 1500), false)
	expect(t, s)

	tr.feed(t, unix.RTM_DELLINK, 0, linkBody(0, 2, 0, "wan0", ifOperDown, 1500), false)
	expect(t, s, reactor.LinkChange{Index: 2, Name: "wan0", Deleted: true})
	tr.feed(t, unix.RTM_DELLINK, 0, linkBody(0, 2, 0, "wan0", ifOperDown, 1500), false)
	expect(t, s)
}

func TestAddrEventsAndNames(t *testing.T) {
	tr, s := newTestTracker(nil, nil)
	tr.feed(t, unix.RTM_NEWLINK, 0, linkBody(0, 2, up, "wan0", operUp, 1500), false)
	s.take()
	p := netip.MustParsePrefix("203.0.113.2/24")
	tr.feed(t, unix.RTM_NEWADDR, 0, addrBody(2, 24, "203.0.113.2", "203.0.113.2"), false)
	expect(t, s, reactor.AddrChange{Index: 2, Name: "wan0", Prefix: p})
	// Lifetime refresh: nothing.
	tr.feed(t, unix.RTM_NEWADDR, 0, addrBody(2, 24, "203.0.113.2", "203.0.113.2"), false)
	expect(t, s)
	tr.feed(t, unix.RTM_DELADDR, 0, addrBody(2, 24, "203.0.113.2", "203.0.113.2"), false)
	expect(t, s, reactor.AddrChange{Index: 2, Name: "wan0", Prefix: p, Deleted: true})
}

func TestRouteSlotSemantics(t *testing.T) {
	tr, s := newTestTracker(nil, nil)
	r := func(gw string, proto uint8) []byte {
		return routeBody(routeSpec{table: 100, protocol: proto, gw: gw, oif: 2})
	}
	rc := func(gw netip.Addr, deleted bool) reactor.RouteChange {
		return reactor.RouteChange{Table: 100, Dst: any4, Gateway: gw, Index: 2, Protocol: unix.RTPROT_STATIC, Deleted: deleted}
	}
	tr.feed(t, unix.RTM_NEWROUTE, create, r("192.0.2.1", unix.RTPROT_STATIC), false)
	expect(t, s, rc(gw1, false))

	// ip route replace: the new route is reported before the old one goes.
	tr.feed(t, unix.RTM_NEWROUTE, unix.NLM_F_REPLACE, r("192.0.2.2", unix.RTPROT_STATIC), false)
	expect(t, s, rc(gw2, false), rc(gw1, true))

	// ip route append, then delete the first alias.
	tr.feed(t, unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_APPEND, r("192.0.2.3", unix.RTPROT_STATIC), false)
	expect(t, s, rc(gw3, false))
	tr.feed(t, unix.RTM_DELROUTE, 0, r("192.0.2.2", unix.RTPROT_STATIC), false)
	expect(t, s, rc(gw2, true))
	// A replace now hits gw3 (the slot's first alias).
	tr.feed(t, unix.RTM_NEWROUTE, unix.NLM_F_REPLACE, r("192.0.2.1", unix.RTPROT_STATIC), false)
	expect(t, s, rc(gw1, false), rc(gw3, true))
	// Deleting an unknown route is a no-op.
	tr.feed(t, unix.RTM_DELROUTE, 0, r("192.0.2.3", unix.RTPROT_STATIC), false)
	expect(t, s)

	// Multipath: one event per nexthop.
	mp := routeBody(routeSpec{table: 200, protocol: unix.RTPROT_STATIC, paths: []nexthop{{gw: gw1, oif: 2}, {gw: gw2, oif: 3}}})
	tr.feed(t, unix.RTM_NEWROUTE, create, mp, false)
	expect(t, s,
		reactor.RouteChange{Table: 200, Dst: any4, Gateway: gw1, Index: 2, Protocol: unix.RTPROT_STATIC},
		reactor.RouteChange{Table: 200, Dst: any4, Gateway: gw2, Index: 3, Protocol: unix.RTPROT_STATIC})
	tr.feed(t, unix.RTM_DELROUTE, 0, mp, false)
	expect(t, s,
		reactor.RouteChange{Table: 200, Dst: any4, Gateway: gw1, Index: 2, Protocol: unix.RTPROT_STATIC, Deleted: true},
		reactor.RouteChange{Table: 200, Dst: any4, Gateway: gw2, Index: 3, Protocol: unix.RTPROT_STATIC, Deleted: true})

	// Two kernel routes projecting onto one event (they differ in metric):
	// added once, removed when the last goes.
	d := "198.51.100.0/24"
	dp := netip.MustParsePrefix(d)
	a := routeBody(routeSpec{table: 100, dst: d, priority: 10, gw: "192.0.2.1", oif: 2})
	b := routeBody(routeSpec{table: 100, dst: d, priority: 20, gw: "192.0.2.1", oif: 2})
	tr.feed(t, unix.RTM_NEWROUTE, create, a, false)
	tr.feed(t, unix.RTM_NEWROUTE, create, b, false)
	expect(t, s, reactor.RouteChange{Table: 100, Dst: dp, Gateway: gw1, Index: 2})
	tr.feed(t, unix.RTM_DELROUTE, 0, a, false)
	expect(t, s)
	tr.feed(t, unix.RTM_DELROUTE, 0, b, false)
	expect(t, s, reactor.RouteChange{Table: 100, Dst: dp, Gateway: gw1, Index: 2, Deleted: true})

	// Cloned (cache) routes are not routes.
	tr.feed(t, unix.RTM_NEWROUTE, 0, routeBody(routeSpec{table: 254, dst: "198.51.100.9/32", flags: unix.RTM_F_CLONED, oif: 2}), false)
	expect(t, s)
}

func TestRouteFilter(t *testing.T) {
	var asked []int
	tr, s := newTestTracker(func(table int, dst netip.Prefix) bool {
		asked = append(asked, table)
		return table == 100 || (table == unix.RT_TABLE_MAIN && dst.Bits() == 0)
	}, nil)
	tr.feed(t, unix.RTM_NEWROUTE, create, routeBody(routeSpec{table: 300, dst: "198.18.0.0/24", oif: 2}), false)
	tr.feed(t, unix.RTM_NEWROUTE, create, routeBody(routeSpec{table: unix.RT_TABLE_MAIN, dst: "198.18.0.0/24", oif: 2}), false)
	tr.feed(t, unix.RTM_DELROUTE, 0, routeBody(routeSpec{table: 300, dst: "198.18.0.0/24", oif: 2}), false)
	expect(t, s)
	tr.feed(t, unix.RTM_NEWROUTE, create, routeBody(routeSpec{table: unix.RT_TABLE_MAIN, gw: "192.0.2.1", oif: 2}), false)
	expect(t, s, reactor.RouteChange{Table: unix.RT_TABLE_MAIN, Dst: any4, Gateway: gw1, Index: 2})
	if !reflect.DeepEqual(asked, []int{300, 254, 300, 254}) {
		t.Fatalf("filter asked for tables %v", asked)
	}
}

func TestKernelFlushMirrored(t *testing.T) {
	tr, s := newTestTracker(nil, nil)
	for i, n := range []string{"wan0", "wan1", "wan2", "wan3"} {
		tr.feed(t, unix.RTM_NEWLINK, 0, linkBody(0, 2+i, up, n, operUp, 1500), false)
	}
	tr.feed(t, unix.RTM_NEWADDR, 0, addrBody(2, 24, "192.0.2.10", "192.0.2.10"), false)
	tr.feed(t, unix.RTM_NEWADDR, 0, addrBody(4, 24, "198.51.100.10", "198.51.100.10"), false)
	tr.feed(t, unix.RTM_NEWADDR, 0, addrBody(5, 24, "203.0.113.10", "203.0.113.10"), false)
	tr.feed(t, unix.RTM_NEWADDR, 0, addrBody(5, 24, "203.0.113.11", "203.0.113.11"), false)
	s.take()

	gwRoute := routeBody(routeSpec{table: 100, gw: "192.0.2.1", oif: 2})
	hostRoute := routeBody(routeSpec{table: unix.RT_TABLE_LOCAL, dst: "192.0.2.10/32", typ: unix.RTN_LOCAL, scope: unix.RT_SCOPE_HOST, oif: 2, prefsrc: "192.0.2.10"})
	mp := routeBody(routeSpec{table: 200, paths: []nexthop{{gw: gw1, oif: 2}, {gw: netip.MustParseAddr("198.51.100.1"), oif: 3}}})
	for _, b := range [][]byte{gwRoute, hostRoute, mp} {
		tr.feed(t, unix.RTM_NEWROUTE, create, b, false)
	}
	s.take()

	// wan0 down: the gateway route goes, the host route stays, the
	// multipath route survives on wan1.
	tr.feed(t, unix.RTM_NEWLINK, 0, linkBody(0, 2, 0, "wan0", ifOperDown, 1500), false)
	expect(t, s,
		reactor.LinkChange{Index: 2, Name: "wan0"},
		reactor.RouteChange{Table: 100, Dst: any4, Gateway: gw1, Index: 2, Deleted: true})
	// While wan0 is down, a dump part still showing a route through it
	// (racing the flush) is not recorded.
	tr.feed(t, unix.RTM_NEWROUTE, unix.NLM_F_MULTI, gwRoute, true)
	expect(t, s)
	// wan1 down too: now every nexthop of the multipath route is dead.
	tr.feed(t, unix.RTM_NEWLINK, 0, linkBody(0, 3, 0, "wan1", ifOperDown, 1500), false)
	expect(t, s,
		reactor.LinkChange{Index: 3, Name: "wan1"},
		reactor.RouteChange{Table: 200, Dst: any4, Gateway: gw1, Index: 2, Deleted: true},
		reactor.RouteChange{Table: 200, Dst: any4, Gateway: netip.MustParseAddr("198.51.100.1"), Index: 3, Deleted: true})
	// Link deleted: host-scope routes go too.
	tr.feed(t, unix.RTM_DELLINK, 0, linkBody(0, 2, 0, "wan0", ifOperDown, 1500), false)
	expect(t, s,
		reactor.LinkChange{Index: 2, Name: "wan0", Deleted: true},
		reactor.RouteChange{Table: unix.RT_TABLE_LOCAL, Dst: netip.MustParsePrefix("192.0.2.10/32"), Index: 2, Deleted: true},
		reactor.AddrChange{Index: 2, Name: "wan0", Prefix: netip.MustParsePrefix("192.0.2.10/24"), Deleted: true})

	// Last IPv4 address of wan2 removed: routes through it are flushed.
	tr.feed(t, unix.RTM_NEWROUTE, create, routeBody(routeSpec{table: 100, dst: "198.18.0.0/16", gw: "198.51.100.1", oif: 4}), false)
	s.take()
	tr.feed(t, unix.RTM_DELADDR, 0, addrBody(4, 24, "198.51.100.10", "198.51.100.10"), false)
	expect(t, s,
		reactor.AddrChange{Index: 4, Name: "wan2", Prefix: netip.MustParsePrefix("198.51.100.10/24"), Deleted: true},
		reactor.RouteChange{Table: 100, Dst: netip.MustParsePrefix("198.18.0.0/16"), Gateway: netip.MustParseAddr("198.51.100.1"), Index: 4, Deleted: true})

	// An address that was some main-table route's preferred source goes
	// (the link keeps another address): that route is flushed, the same
	// route in another table is not.
	mainSrc := routeBody(routeSpec{table: unix.RT_TABLE_MAIN, dst: "198.18.1.0/24", gw: "203.0.113.1", oif: 5, prefsrc: "203.0.113.10"})
	otherSrc := routeBody(routeSpec{table: 100, dst: "198.18.1.0/24", gw: "203.0.113.1", oif: 5, prefsrc: "203.0.113.10"})
	tr.feed(t, unix.RTM_NEWROUTE, create, mainSrc, false)
	tr.feed(t, unix.RTM_NEWROUTE, create, otherSrc, false)
	s.take()
	tr.feed(t, unix.RTM_DELADDR, 0, addrBody(5, 24, "203.0.113.10", "203.0.113.10"), false)
	expect(t, s,
		reactor.AddrChange{Index: 5, Name: "wan3", Prefix: netip.MustParsePrefix("203.0.113.10/24"), Deleted: true},
		reactor.RouteChange{Table: unix.RT_TABLE_MAIN, Dst: netip.MustParsePrefix("198.18.1.0/24"), Gateway: netip.MustParseAddr("203.0.113.1"), Index: 5, Deleted: true})
	// The kernel's own DELROUTE for the flushed route (newer kernels send
	// one) is then a no-op.
	tr.feed(t, unix.RTM_DELROUTE, 0, mainSrc, false)
	expect(t, s)
}

func TestResyncSweep(t *testing.T) {
	tr, s := newTestTracker(nil, nil)
	tr.beginResync()
	tr.feed(t, unix.RTM_NEWLINK, 0, linkBody(0, 2, up, "wan0", operUp, 1500), false)
	tr.feed(t, unix.RTM_NEWLINK, 0, linkBody(0, 3, up, "wan1", operUp, 1500), false)
	tr.feed(t, unix.RTM_NEWROUTE, create, routeBody(routeSpec{table: 100, gw: "192.0.2.1", oif: 2}), false)
	tr.feed(t, unix.RTM_NEWROUTE, create, routeBody(routeSpec{table: 101, gw: "192.0.2.2", oif: 3}), false)
	tr.feed(t, unix.RTM_NEWRULE, 0, ruleBody(ruleSpec{priority: 10100, table: 100, mark: 0x100, mask: 0xff00}), false)
	tr.feed(t, unix.RTM_NEWRULE, 0, ruleBody(ruleSpec{priority: 10101, table: 101, mark: 0x200, mask: 0xff00}), false)
	s.take()

	// Overflow: wan1 was deleted (with its route) and the second rule
	// removed, but the notifications were lost. A resync dumps what is left.
	tr.beginResync()
	tr.beginDump(kindLink)
	tr.feed(t, unix.RTM_NEWLINK, unix.NLM_F_MULTI, linkBody(0, 2, up, "wan0", operUp, 1500), true)
	tr.endDump(kindLink)
	expect(t, s,
		reactor.LinkChange{Index: 3, Name: "wan1", Deleted: true},
		reactor.RouteChange{Table: 101, Dst: any4, Gateway: gw2, Index: 3, Deleted: true},
		reactor.LinkChange{Index: 2, Name: "wan0", AdminUp: true, Carrier: true, OperUp: true})

	tr.beginDump(kindRoute)
	tr.feed(t, unix.RTM_NEWROUTE, unix.NLM_F_MULTI, routeBody(routeSpec{table: 100, gw: "192.0.2.1", oif: 2}), true)
	// A route added during the dump, by notification.
	tr.feed(t, unix.RTM_NEWROUTE, create, routeBody(routeSpec{table: 102, gw: "192.0.2.3", oif: 2}), false)
	tr.endDump(kindRoute)
	expect(t, s,
		reactor.RouteChange{Table: 102, Dst: any4, Gateway: gw3, Index: 2},
		reactor.RouteChange{Table: 100, Dst: any4, Gateway: gw1, Index: 2})

	tr.beginDump(kindRule)
	tr.feed(t, unix.RTM_NEWRULE, unix.NLM_F_MULTI, ruleBody(ruleSpec{priority: 10100, table: 100, mark: 0x100, mask: 0xff00}), true)
	tr.endDump(kindRule)
	expect(t, s,
		reactor.RuleChange{Priority: 10101, Table: 101, Mark: 0x200, Deleted: true},
		reactor.RuleChange{Priority: 10100, Table: 100, Mark: 0x100})
}

func TestRuleIdentity(t *testing.T) {
	tr, s := newTestTracker(nil, func(prio, table int) bool { return prio >= 10000 && prio < 10300 })
	a := ruleSpec{priority: 10100, table: 100, src: "203.0.113.2/32", protocol: unix.RTPROT_STATIC}
	b := ruleSpec{priority: 10100, table: 100, src: "203.0.113.3/32", protocol: unix.RTPROT_STATIC}
	want := reactor.RuleChange{Priority: 10100, Table: 100, Protocol: unix.RTPROT_STATIC}
	tr.feed(t, unix.RTM_NEWRULE, 0, ruleBody(a), false)
	tr.feed(t, unix.RTM_NEWRULE, 0, ruleBody(b), false)
	expect(t, s, want)
	// The kernel flips FIB_RULE_IIF_DETACHED on its own; the deletion
	// still matches.
	a.flags = fibRuleIifDetached
	tr.feed(t, unix.RTM_DELRULE, 0, ruleBody(a), false)
	expect(t, s)
	tr.feed(t, unix.RTM_DELRULE, 0, ruleBody(b), false)
	want.Deleted = true
	expect(t, s, want)
	// Filtered out: the kernel's default rules.
	tr.feed(t, unix.RTM_NEWRULE, 0, ruleBody(ruleSpec{priority: 32766, table: unix.RT_TABLE_MAIN}), false)
	expect(t, s)
}

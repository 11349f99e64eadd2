package netlinksrc

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

// daemonRouteFilter is what the daemon passes: main-table default routes
// and everything in its own tables (here 100 and 200).
func daemonRouteFilter(table int, dst netip.Prefix) bool {
	return table == 100 || table == 200 || (table == unix.RT_TABLE_MAIN && dst.Bits() == 0)
}

func daemonRuleFilter(priority, table int) bool { return priority >= 10000 && priority < 10300 }

func noUnexpected(t *testing.T, r *recorder) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dupAdds != 0 || r.badDels != 0 || r.backward != 0 {
		t.Errorf("event stream not a clean set of changes: %d duplicate adds, %d removals of unknown objects, %d timestamps going backwards",
			r.dupAdds, r.badDels, r.backward)
	}
}

// vethPair creates name <-> name+"p" in n.
func vethPair(t *testing.T, n *testNS, name string) {
	t.Helper()
	n.ip(t, "link", "add", name, "type", "veth", "peer", "name", name+"p")
}

func TestNetnsLinkEvents(t *testing.T) {
	n := newNS(t, "link")
	vethPair(t, n, "wan0")
	_, r := startSource(t, n, Options{})
	idx, pidx := n.index(t, "wan0"), n.index(t, "wan0p")

	// Initial state: both ends exist, down.
	r.waitPayload(t, 0, reactor.LinkChange{Index: idx, Name: "wan0"})
	if d := viewMatchesKernel(t, n, r, nil, nil); d != "" {
		t.Fatalf("initial view differs from the kernel:\n%s", d)
	}

	m := r.mark()
	n.ip(t, "link", "set", "wan0", "up") // peer still down: no carrier
	r.waitPayload(t, m, reactor.LinkChange{Index: idx, Name: "wan0", AdminUp: true})

	m = r.mark()
	n.ip(t, "link", "set", "wan0p", "up")
	r.waitPayload(t, m, reactor.LinkChange{Index: idx, Name: "wan0", AdminUp: true, Carrier: true, OperUp: true})

	// Carrier loss on our side: the far end goes down. Measured from the
	// netlink request (in process) to the emit call.
	peer, err := n.nl.LinkByIndex(pidx)
	if err != nil {
		t.Fatal(err)
	}
	m = r.mark()
	t0 := time.Now()
	if err := n.nl.LinkSetDown(peer); err != nil {
		t.Fatal(err)
	}
	i := r.waitPayload(t, m, reactor.LinkChange{Index: idx, Name: "wan0", AdminUp: true})
	r.mu.Lock()
	lat, stamp := r.recvAt[i].Sub(t0), r.events[i].Time.Sub(t0)
	r.mu.Unlock()
	t.Logf("carrier loss: emitted %v after the request (event timestamp +%v)", lat, stamp)
	if lat > 250*time.Millisecond || stamp < 0 {
		t.Errorf("carrier loss emitted after %v (timestamp %v), want well under the 50 ms failover budget", lat, stamp)
	}

	// Duplicate suppression: MTU, queue length and alias changes all make
	// the kernel send RTM_NEWLINK; none changes what we report.
	m = r.mark()
	n.ip(t, "link", "set", "wan0", "mtu", "1400")
	n.ip(t, "link", "set", "wan0", "txqueuelen", "10")
	n.ip(t, "link", "set", "wan0", "alias", "uplink")
	r.barrier(t, n)
	for _, p := range r.since(m) {
		if _, ok := p.(reactor.LinkChange); ok {
			t.Errorf("link attribute change emitted %+v", p)
		}
	}

	// Rename (only possible while down), then delete.
	m = r.mark()
	n.ip(t, "link", "set", "wan0", "down")
	n.ip(t, "link", "set", "wan0", "name", "wan9")
	r.waitPayload(t, m, reactor.LinkChange{Index: idx, Name: "wan9"})
	m = r.mark()
	n.ip(t, "link", "del", "wan9")
	r.waitPayload(t, m, reactor.LinkChange{Index: idx, Name: "wan9", Deleted: true})
	r.waitPayload(t, m, reactor.LinkChange{Index: pidx, Name: "wan0p", Deleted: true})
	eventuallyMatches(t, n, r, nil, nil, 3*time.Second)
	noUnexpected(t, r)
}

func TestNetnsAddrEvents(t *testing.T) {
	n := newNS(t, "addr")
	vethPair(t, n, "wan0")
	n.ip(t, "link", "set", "wan0", "up")
	_, r := startSource(t, n, Options{})
	idx := n.index(t, "wan0")

	p1, p2 := netip.MustParsePrefix("203.0.113.2/24"), netip.MustParsePrefix("203.0.113.3/24")
	m := r.mark()
	n.ip(t, "addr", "add", p1.String(), "dev", "wan0")
	r.waitPayload(t, m, reactor.AddrChange{Index: idx, Name: "wan0", Prefix: p1})
	n.ip(t, "addr", "add", p2.String(), "dev", "wan0")
	r.waitPayload(t, m, reactor.AddrChange{Index: idx, Name: "wan0", Prefix: p2})

	// A lifetime refresh (what a DHCP renewal does) is not a change.
	m = r.mark()
	n.ip(t, "addr", "change", p1.String(), "dev", "wan0", "valid_lft", "3600", "preferred_lft", "1800")
	r.barrier(t, n)
	for _, p := range r.since(m) {
		if a, ok := p.(reactor.AddrChange); ok && a.Index == idx {
			t.Errorf("lifetime refresh emitted %+v", a)
		}
	}

	m = r.mark()
	n.ip(t, "addr", "del", p2.String(), "dev", "wan0")
	r.waitPayload(t, m, reactor.AddrChange{Index: idx, Name: "wan0", Prefix: p2, Deleted: true})
	eventuallyMatches(t, n, r, nil, nil, 3*time.Second)
	noUnexpected(t, r)
}

func TestNetnsRouteEvents(t *testing.T) {
	n := newNS(t, "route")
	for i, name := range []string{"wan0", "wan1"} {
		vethPair(t, n, name)
		n.ip(t, "link", "set", name+"p", "up")
		n.ip(t, "link", "set", name, "up")
		n.ip(t, "addr", "add", []string{"192.0.2.2/24", "198.51.100.2/24"}[i], "dev", name)
	}
	_, r := startSource(t, n, Options{RouteFilter: daemonRouteFilter})
	w0, w1 := n.index(t, "wan0"), n.index(t, "wan1")
	gwA, gwB := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1")
	def := netip.MustParsePrefix("0.0.0.0/0")

	m := r.mark()
	n.ip(t, "route", "add", "default", "via", "192.0.2.1", "table", "100", "proto", "static")
	r.waitPayload(t, m, reactor.RouteChange{Table: 100, Dst: def, Gateway: gwA, Index: w0, Protocol: unix.RTPROT_STATIC})

	// Unwatched: another table, and a non-default route of main.
	m = r.mark()
	n.ip(t, "route", "add", "198.18.0.0/24", "via", "192.0.2.1", "table", "300")
	n.ip(t, "route", "add", "198.18.1.0/24", "via", "192.0.2.1")
	r.barrier(t, n)
	for _, p := range r.since(m) {
		if _, ok := p.(reactor.RouteChange); ok {
			t.Errorf("filtered route emitted: %+v", p)
		}
	}

	m = r.mark()
	n.ip(t, "route", "add", "default", "via", "192.0.2.1")
	r.waitPayload(t, m, reactor.RouteChange{Table: unix.RT_TABLE_MAIN, Dst: def, Gateway: gwA, Index: w0, Protocol: unix.RTPROT_BOOT})

	// Replace: the new route is announced before the old one is removed.
	m = r.mark()
	n.ip(t, "route", "replace", "default", "via", "198.51.100.1", "dev", "wan1", "table", "100", "proto", "static")
	added := r.waitPayload(t, m, reactor.RouteChange{Table: 100, Dst: def, Gateway: gwB, Index: w1, Protocol: unix.RTPROT_STATIC})
	removed := r.waitPayload(t, m, reactor.RouteChange{Table: 100, Dst: def, Gateway: gwA, Index: w0, Protocol: unix.RTPROT_STATIC, Deleted: true})
	if removed < added {
		t.Errorf("replace: old route removed (event %d) before the new one was added (event %d)", removed, added)
	}

	// Multipath: one event per nexthop.
	mp := netip.MustParsePrefix("198.18.5.0/24")
	m = r.mark()
	n.ip(t, "route", "add", mp.String(), "table", "200", "nexthop", "via", "192.0.2.1", "dev", "wan0", "nexthop", "via", "198.51.100.1", "dev", "wan1")
	r.waitPayload(t, m, reactor.RouteChange{Table: 200, Dst: mp, Gateway: gwA, Index: w0, Protocol: unix.RTPROT_BOOT})
	r.waitPayload(t, m, reactor.RouteChange{Table: 200, Dst: mp, Gateway: gwB, Index: w1, Protocol: unix.RTPROT_BOOT})

	// wan0 down: the kernel drops the main default route through it
	// without telling anyone; the source reports it removed.
	m = r.mark()
	n.ip(t, "link", "set", "wan0", "down")
	r.waitPayload(t, m, reactor.RouteChange{Table: unix.RT_TABLE_MAIN, Dst: def, Gateway: gwA, Index: w0, Protocol: unix.RTPROT_BOOT, Deleted: true})
	eventuallyMatches(t, n, r, daemonRouteFilter, nil, 3*time.Second)

	m = r.mark()
	n.ip(t, "route", "del", "default", "table", "100")
	r.waitPayload(t, m, reactor.RouteChange{Table: 100, Dst: def, Gateway: gwB, Index: w1, Protocol: unix.RTPROT_STATIC, Deleted: true})
	eventuallyMatches(t, n, r, daemonRouteFilter, nil, 3*time.Second)
	noUnexpected(t, r)
}

func TestNetnsRuleEvents(t *testing.T) {
	n := newNS(t, "rule")
	_, r := startSource(t, n, Options{RuleFilter: daemonRuleFilter})

	m := r.mark()
	n.ip(t, "rule", "add", "fwmark", "0x100/0xff00", "lookup", "100", "pref", "10100", "protocol", "static")
	want := reactor.RuleChange{Priority: 10100, Table: 100, Mark: 0x100, Protocol: unix.RTPROT_STATIC}
	r.waitPayload(t, m, want)

	// Large table ids travel in FRA_TABLE only.
	n.ip(t, "rule", "add", "from", "203.0.113.2", "lookup", "1000", "pref", "10200")
	r.waitFor(t, m, "rule 10200", func(p reactor.Payload) bool {
		c, ok := p.(reactor.RuleChange)
		return ok && c.Priority == 10200 && c.Table == 1000 && !c.Deleted
	})

	// Outside the daemon's priority block: filtered.
	m = r.mark()
	n.ip(t, "rule", "add", "pref", "20000", "lookup", "100")
	r.barrier(t, n)
	for _, p := range r.since(m) {
		if _, ok := p.(reactor.RuleChange); ok {
			t.Errorf("filtered rule emitted %+v", p)
		}
	}

	m = r.mark()
	n.ip(t, "rule", "del", "fwmark", "0x100/0xff00", "lookup", "100", "pref", "10100")
	want.Deleted = true
	r.waitPayload(t, m, want)
	eventuallyMatches(t, n, r, nil, daemonRuleFilter, 3*time.Second)
	noUnexpected(t, r)
}

// TestNetnsKernelFlush checks, with no filter at all (every table,
// including local), that the routes the kernel drops silently are reported
// removed: the emitted view must converge to the kernel's after each step.
func TestNetnsKernelFlush(t *testing.T) {
	n := newNS(t, "flush")
	for i, name := range []string{"wan0", "wan1"} {
		vethPair(t, n, name)
		n.ip(t, "link", "set", name+"p", "up")
		n.ip(t, "link", "set", name, "up")
		n.ip(t, "addr", "add", []string{"192.0.2.2/24", "198.51.100.2/24"}[i], "dev", name)
	}
	routes := [][]string{
		{"route", "add", "default", "via", "192.0.2.1", "table", "100"},
		{"route", "add", "198.18.0.0/16", "via", "192.0.2.1", "src", "192.0.2.2"},
		{"route", "add", "198.18.7.0/24", "table", "200", "nexthop", "via", "192.0.2.1", "dev", "wan0", "nexthop", "via", "198.51.100.1", "dev", "wan1"},
		{"route", "add", "unreachable", "198.18.9.0/24", "table", "100"},
	}
	for _, c := range routes {
		n.ip(t, c...)
	}
	_, r := startSource(t, n, Options{})
	eventuallyMatches(t, n, r, nil, nil, 3*time.Second)

	steps := []struct {
		name string
		cmds [][]string
	}{
		{"wan0 down", [][]string{{"link", "set", "wan0", "down"}}},
		// The multipath route survived on wan1; the others come back.
		{"wan0 up, routes back", append([][]string{{"link", "set", "wan0", "up"}}, routes[:2]...)},
		{"last address of wan0 removed", [][]string{{"addr", "del", "192.0.2.2/24", "dev", "wan0"}}},
		{"preferred source removed", [][]string{
			{"addr", "add", "203.0.113.2/24", "dev", "wan1"},
			{"addr", "add", "203.0.113.3/24", "dev", "wan1"},
			{"route", "add", "198.18.3.0/24", "via", "203.0.113.1", "src", "203.0.113.3"},
			{"route", "add", "198.18.4.0/24", "via", "203.0.113.1", "src", "203.0.113.3", "table", "100"},
			{"addr", "del", "203.0.113.3/24", "dev", "wan1"},
		}},
		{"wan1 deleted", [][]string{{"link", "del", "wan1"}}},
	}
	for _, st := range steps {
		for _, c := range st.cmds {
			n.ip(t, c...)
		}
		r.barrier(t, n)
		if d := viewMatchesKernel(t, n, r, nil, nil); d != "" {
			t.Fatalf("after %q the emitted view differs from the kernel:\n%s", st.name, d)
		}
	}
	noUnexpected(t, r)
}

// TestNetnsOverflowResync makes the socket overrun (tiny receive buffer,
// consumer stalled during a burst of 5 000 route changes) and checks that
// the source recovers the exact kernel state, deletions included.
func TestNetnsOverflowResync(t *testing.T) {
	n := newNS(t, "ovf")
	vethPair(t, n, "wan0")
	n.ip(t, "link", "set", "wan0p", "up")
	n.ip(t, "link", "set", "wan0", "up")
	n.ip(t, "addr", "add", "192.0.2.2/24", "dev", "wan0")
	var pre []string
	for i := range 300 {
		pre = append(pre, fmt.Sprintf("route add 198.18.%d.%d/32 via 192.0.2.1 table 100", 1+i/250, i%250))
	}
	pre = append(pre, "route add default via 192.0.2.1")
	n.batch(t, pre)

	s, r := startSource(t, n, Options{RouteFilter: daemonRouteFilter, ReceiveBufferSize: 1})
	eventuallyMatches(t, n, r, daemonRouteFilter, nil, 5*time.Second)
	if s.Resyncs() != 0 {
		t.Logf("note: %d resyncs before the burst", s.Resyncs())
	}
	before := s.Resyncs()

	var storm []string
	for i := range 2000 {
		storm = append(storm, fmt.Sprintf("route add 198.18.%d.%d/32 via 192.0.2.1 table 100", 10+i/250, i%250))
	}
	for i := range 2350 {
		storm = append(storm, fmt.Sprintf("route add 198.18.%d.%d/32 via 192.0.2.1 table 300", 100+i/250, i%250))
	}
	for i := range 150 { // pre-existing routes deleted while the socket overflows
		storm = append(storm, fmt.Sprintf("route del 198.18.1.%d/32 table 100", i))
	}
	for i := range 500 {
		storm = append(storm, fmt.Sprintf("route del 198.18.%d.%d/32 table 100", 10+i/250, i%250))
	}
	storm = append(storm, "route replace default via 192.0.2.3")
	if len(storm) != 5001 {
		t.Fatalf("storm has %d changes", len(storm))
	}

	gate := make(chan struct{})
	r.mu.Lock()
	r.gate = gate
	r.mu.Unlock()
	start := time.Now()
	n.batch(t, storm)
	t.Logf("burst of %d route changes applied in %v", len(storm), time.Since(start))
	r.mu.Lock()
	r.gate = nil
	close(gate)
	r.mu.Unlock()

	start = time.Now()
	eventuallyMatches(t, n, r, daemonRouteFilter, nil, 20*time.Second)
	if s.Resyncs() == before {
		t.Fatalf("no resync happened: the burst did not overrun the socket, the test proves nothing")
	}
	want := kernelRoutes(t, n, daemonRouteFilter)
	t.Logf("converged %v after the burst; resyncs %d; %d events; %d routes watched", time.Since(start), s.Resyncs(), r.mark(), len(want))
	for i := range 150 {
		k := reactor.RouteChange{Table: 100, Dst: netip.MustParsePrefix(fmt.Sprintf("198.18.1.%d/32", i)),
			Gateway: netip.MustParseAddr("192.0.2.1"), Index: n.index(t, "wan0"), Protocol: unix.RTPROT_BOOT}
		r.mu.Lock()
		stale := r.routes[k]
		r.mu.Unlock()
		if stale {
			t.Fatalf("route %v deleted during the overflow still in the view", k.Dst)
		}
	}
}

func TestRunSetupErrors(t *testing.T) {
	emit := func(reactor.Event) {}
	if err := New(Options{}).Run(context.Background(), nil); err == nil {
		t.Error("Run with nil emit succeeded")
	}

	// A handle that is not a network namespace: an unrecoverable setup
	// error, reported at once rather than retried forever.
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := New(Options{NetNS: netns.NsHandle(f.Fd())}).Run(ctx, emit); err == nil {
		t.Error("Run in a non-namespace fd succeeded")
	} else {
		t.Logf("bad namespace: %v", err)
	}

	// Cancelled before it starts: returns nil. In a test namespace when
	// possible, although the source only reads.
	o := Options{}
	if os.Geteuid() == 0 {
		o.NetNS = newNS(t, "setup").h
	}
	s := New(o)
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, emit) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run with a cancelled context = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run ignored its cancelled context")
	}
	if err := s.Run(context.Background(), emit); err == nil {
		t.Error("second Run on one Source succeeded")
	}
}

package dhcp

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netlink"

	"github.com/wanreact/wanreact/reactor"
)

// Integration tests: the real client against real servers over a veth
// pair between two namespaces the test creates (root only).

var (
	wantRoute = reactor.StaticRoute{Dst: netip.MustParsePrefix("198.51.100.0/24"), Gateway: netip.MustParseAddr("198.18.0.1")}
	poolLo    = netip.MustParseAddr("198.18.0.100")
	poolHi    = netip.MustParseAddr("198.18.0.150")
)

func startDnsmasq(t *testing.T, n *testNet) *proc {
	t.Helper()
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Skip("dnsmasq not installed (apt-get install -y dnsmasq-base)")
	}
	dir := t.TempDir()
	return startInNS(t, n.ispName, "DHCP, IP range",
		"dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
		"--interface=isp0", "--bind-interfaces", "--user=root", "--group=root",
		"--dhcp-leasefile="+filepath.Join(dir, "leases"), "--pid-file="+filepath.Join(dir, "pid"),
		// dnsmasq pings an address before its first OFFER and waits up to 3 s
		// for an answer: server policy that would hide the client latency
		// measured here.
		"--no-ping",
		"--dhcp-authoritative", "--log-facility=-", "--log-dhcp",
		"--dhcp-range=198.18.0.100,198.18.0.150,255.255.255.0,2m",
		"--dhcp-option=option:router,198.18.0.254", // ignored: option 121 wins
		"--dhcp-option=option:dns-server,192.0.2.53",
		"--dhcp-option=option:mtu,1400",
		"--dhcp-option=option:classless-static-route,198.51.100.0/24,198.18.0.1,0.0.0.0/0,198.18.0.1",
	)
}

func startDhcpd(t *testing.T, n *testNet) *proc {
	t.Helper()
	bin, err := exec.LookPath("dhcpd")
	if err != nil {
		t.Skip("isc-dhcp-server not installed (apt-get install -y isc-dhcp-server)")
	}
	dir := t.TempDir()
	conf := `
option rfc3442-classless-static-routes code 121 = array of integer 8;
default-lease-time 120;
max-lease-time 120;
authoritative;
ping-check false;
subnet 198.18.0.0 netmask 255.255.255.0 {
  range 198.18.0.100 198.18.0.150;
  option routers 198.18.0.254;
  option domain-name-servers 192.0.2.53;
  option interface-mtu 1400;
  option rfc3442-classless-static-routes 24, 198, 51, 100, 198, 18, 0, 1, 0, 198, 18, 0, 1;
}
`
	if err := os.WriteFile(filepath.Join(dir, "dhcpd.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "leases"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return startInNS(t, n.ispName, "Sending on   Socket/fallback",
		bin, "-f", "-d", "-4", "-cf", filepath.Join(dir, "dhcpd.conf"), "-lf", filepath.Join(dir, "leases"),
		"-pf", filepath.Join(dir, "pid"), "isp0")
}

// monitor records address, route and link messages in the client
// namespace until stopped.
type monitor struct {
	mu   sync.Mutex
	msgs []string
	done chan struct{}
}

func watchKernel(t *testing.T, n *testNet) *monitor {
	t.Helper()
	m := &monitor{done: make(chan struct{})}
	addrs := make(chan netlink.AddrUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 64)
	links := make(chan netlink.LinkUpdate, 64)
	if err := netlink.AddrSubscribeAt(n.cli, addrs, m.done); err != nil {
		t.Fatal(err)
	}
	if err := netlink.RouteSubscribeAt(n.cli, routes, m.done); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSubscribeAt(n.cli, links, m.done); err != nil {
		t.Fatal(err)
	}
	add := func(s string) { m.mu.Lock(); m.msgs = append(m.msgs, s); m.mu.Unlock() }
	go func() {
		for {
			select {
			case a := <-addrs:
				add("addr " + a.LinkAddress.String())
			case r := <-routes:
				add("route " + r.Route.String())
			case l := <-links:
				add("link " + l.Attrs().Name)
			case <-m.done:
				return
			}
		}
	}()
	t.Cleanup(m.stop)
	return m
}

func (m *monitor) stop() {
	select {
	case <-m.done:
	default:
		close(m.done)
	}
}

func (m *monitor) seen() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.msgs)
}

// acquireWithinOneSecond brings wan0 up and expects a lease from the pool
// with option 121 applied in under a second.
func acquireWithinOneSecond(t *testing.T, n *testNet, tc *testClient) reactor.LeaseChange {
	t.Helper()
	tc.waitState(t, StateLinkDown, time.Second)
	start := time.Now()
	n.carrierUp(t)
	tc.c.LinkChanged(true)
	ev := tc.next(t, 3*time.Second)
	took := time.Since(start)
	t.Logf("lease %v from %v in %v", ev.Prefix, ev.Server, took)
	if took > time.Second {
		t.Errorf("address after %v, want within 1 s of link up", took)
	}
	a := ev.Prefix.Addr()
	if ev.Kind != "bound" || ev.Prefix.Bits() != 24 || a.Less(poolLo) || poolHi.Less(a) {
		t.Fatalf("event %+v, want bound in the pool", ev)
	}
	// Option 121 replaces option 3 (198.18.0.254): RFC 3442.
	if ev.Gateway != netip.MustParseAddr("198.18.0.1") || !slices.Equal(ev.Routes, []reactor.StaticRoute{wantRoute}) {
		t.Errorf("gateway %v routes %v, want 198.18.0.1 and %v", ev.Gateway, ev.Routes, wantRoute)
	}
	if ev.Server != netip.MustParseAddr("198.18.0.1") || !slices.Equal(ev.DNS, []netip.Addr{netip.MustParseAddr("192.0.2.53")}) ||
		ev.MTU != 1400 || ev.Lease != 2*time.Minute {
		t.Errorf("server %v dns %v mtu %d lease %v", ev.Server, ev.DNS, ev.MTU, ev.Lease)
	}
	return ev
}

// renewWithoutKernelChange jumps the clock to T1 and expects a renewal of
// the same lease that needs no kernel change, and no socket left open.
func renewWithoutKernelChange(t *testing.T, n *testNet, tc *testClient, clk *shiftClock, bound reactor.LeaseChange) {
	t.Helper()
	tc.waitState(t, StateBound, time.Second)
	if s := tc.c.sockets.Load(); s != 0 {
		t.Fatalf("%d sockets open in BOUND, want 0", s)
	}
	st := tc.c.Status()
	if st.Address != bound.Prefix || !st.Expiry.Equal(bound.Expiry) || !st.T1.Before(st.T2) || !st.T2.Before(st.Expiry) {
		t.Fatalf("status %+v", st)
	}
	mon := watchKernel(t, n)
	time.Sleep(50 * time.Millisecond) // let the subscriptions settle
	clk.AdvanceTo(st.T1)
	ev := tc.next(t, 3*time.Second)
	if ev.Kind != "renewed" || ev.Prefix != bound.Prefix || ev.Gateway != bound.Gateway || !slices.Equal(ev.Routes, bound.Routes) ||
		!ev.Expiry.After(bound.Expiry) {
		t.Fatalf("renewal %+v, want same lease with a later expiry than %v", ev, bound.Expiry)
	}
	tc.waitState(t, StateBound, time.Second)
	time.Sleep(100 * time.Millisecond)
	mon.stop()
	if msgs := mon.seen(); len(msgs) != 0 {
		t.Fatalf("renewal changed the kernel: %v", msgs)
	}
	if s := tc.c.sockets.Load(); s != 0 {
		t.Fatalf("%d sockets open after renewal, want 0", s)
	}
}

// rebindAtT2 jumps straight past T2, as if every RENEWING unicast had
// been lost: the broadcast REBINDING request goes through the raw socket,
// the server's unicast ACK to the leased address comes back through it.
func rebindAtT2(t *testing.T, tc *testClient, clk *shiftClock, bound reactor.LeaseChange) {
	t.Helper()
	tc.waitState(t, StateBound, time.Second)
	clk.AdvanceTo(tc.c.Status().T2)
	ev := tc.next(t, 3*time.Second)
	if ev.Kind != "renewed" || ev.Prefix != bound.Prefix {
		t.Fatalf("rebinding gave %+v", ev)
	}
	tc.waitState(t, StateBound, time.Second)
	if s := tc.c.sockets.Load(); s != 0 {
		t.Fatalf("%d sockets open after rebinding, want 0", s)
	}
}

func TestDnsmasqAcquireAndRenew(t *testing.T) {
	n := newTestNet(t)
	srv := startDnsmasq(t, n)
	clk := &shiftClock{}
	dir := t.TempDir()
	tc := startClient(t, n, Options{LeaseDir: dir, Clock: clk, Hostname: "cpe"})
	bound := acquireWithinOneSecond(t, n, tc)
	if r := <-tc.hooks; r != "BOUND" {
		t.Errorf("hook reason %q", r)
	}
	stored, err := LoadLease(dir, "isp1")
	if err != nil || stored == nil || stored.Address != bound.Prefix {
		t.Fatalf("stored lease %+v %v", stored, err)
	}
	if !slices.Contains(n.wanAddrs(t), bound.Prefix) {
		t.Fatal("test reducer did not install the address")
	}
	acks := srv.count("DHCPACK(isp0)")
	renewWithoutKernelChange(t, n, tc, clk, bound)
	if srv.count("DHCPACK(isp0)") != acks+1 {
		t.Fatalf("dnsmasq did not ACK the renewal:\n%s", srv.log())
	}
	if r := <-tc.hooks; r != "RENEW" {
		t.Errorf("hook reason %q", r)
	}
	renewed, _ := LoadLease(dir, "isp1")
	if renewed == nil || !renewed.Expiry().After(stored.Expiry()) {
		t.Fatal("renewed lease not stored")
	}
	rebindAtT2(t, tc, clk, bound)
	if r := <-tc.hooks; r != "REBIND" {
		t.Errorf("hook reason %q", r)
	}
	if srv.count("DHCPACK(isp0)") != acks+2 {
		t.Fatalf("dnsmasq did not ACK the rebinding:\n%s", srv.log())
	}
}

func TestDnsmasqRestartLinkFlapRelease(t *testing.T) {
	n := newTestNet(t)
	srv := startDnsmasq(t, n)
	dir := t.TempDir()
	tc := startClient(t, n, Options{LeaseDir: dir})
	bound := acquireWithinOneSecond(t, n, tc)
	tc.waitState(t, StateBound, time.Second)

	// Restart without Release: nothing is emitted, the address stays.
	tc.stop()
	if len(tc.events) != 0 {
		t.Fatalf("stop emitted %+v", <-tc.events)
	}
	if !slices.Contains(n.wanAddrs(t), bound.Prefix) {
		t.Fatal("address gone after stop")
	}
	requests, discovers := srv.count("DHCPREQUEST(isp0)"), srv.count("DHCPDISCOVER")
	tc = startClient(t, n, Options{LeaseDir: dir, Release: true})
	ev := tc.next(t, time.Second)
	if ev.Kind != "bound" || ev.Prefix != bound.Prefix || !ev.Expiry.Equal(bound.Expiry) {
		t.Fatalf("stored lease event %+v, want bound %v", ev, bound.Prefix)
	}
	// INIT-REBOOT confirms it.
	ev = tc.next(t, time.Second)
	if ev.Kind != "bound" || ev.Prefix != bound.Prefix || !ev.Expiry.After(bound.Expiry) {
		t.Fatalf("INIT-REBOOT event %+v", ev)
	}
	if srv.count("DHCPREQUEST(isp0)") != requests+1 || srv.count("DHCPDISCOVER") != discovers {
		t.Fatalf("restart did not use INIT-REBOOT:\n%s", srv.log())
	}
	if r := <-tc.hooks; r != "REBOOT" {
		t.Errorf("hook reason %q", r)
	}

	// Link flap: INIT-REBOOT again, fast.
	tc.waitState(t, StateBound, time.Second)
	n.setWAN(t, false)
	tc.c.LinkChanged(false)
	tc.waitState(t, StateLinkDown, time.Second)
	start := time.Now()
	n.carrierUp(t)
	tc.c.LinkChanged(true)
	ev = tc.next(t, 2*time.Second)
	if ev.Kind != "bound" || ev.Prefix != bound.Prefix || time.Since(start) > time.Second {
		t.Fatalf("after link flap: %+v after %v", ev, time.Since(start))
	}
	if srv.count("DHCPDISCOVER") != discovers {
		t.Fatalf("link flap went through DISCOVER:\n%s", srv.log())
	}

	// Revalidate (Wi-Fi reassociation) does the same.
	tc.waitState(t, StateBound, time.Second)
	tc.c.Revalidate()
	if ev = tc.next(t, 2*time.Second); ev.Kind != "bound" || ev.Prefix != bound.Prefix {
		t.Fatalf("after revalidate: %+v", ev)
	}

	// Stop with Release.
	tc.waitState(t, StateBound, time.Second)
	tc.stop()
	if ev = tc.next(t, time.Second); ev.Kind != "released" || ev.Prefix != bound.Prefix {
		t.Fatalf("release event %+v", ev)
	}
	deadline := time.Now().Add(2 * time.Second)
	for srv.count("DHCPRELEASE(isp0)") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if srv.count("DHCPRELEASE(isp0)") != 1 {
		t.Fatalf("dnsmasq saw no DHCPRELEASE:\n%s", srv.log())
	}
	if l, _ := LoadLease(dir, "isp1"); l != nil {
		t.Fatal("released lease still stored")
	}
}

func TestDhcpdAcquireAndRenew(t *testing.T) {
	n := newTestNet(t)
	srv := startDhcpd(t, n)
	clk := &shiftClock{}
	tc := startClient(t, n, Options{Clock: clk})
	bound := acquireWithinOneSecond(t, n, tc)
	acks := srv.count("DHCPACK on")
	renewWithoutKernelChange(t, n, tc, clk, bound)
	if srv.count("DHCPACK on") != acks+1 {
		t.Fatalf("dhcpd did not ACK the renewal:\n%s", srv.log())
	}
	rebindAtT2(t, tc, clk, bound)
	if srv.count("DHCPACK on") != acks+2 {
		t.Fatalf("dhcpd did not ACK the rebinding:\n%s", srv.log())
	}
}

// startServer4 runs an insomniacslk server4 in the ISP namespace that
// offers addrFor(renew) (renew: the request has ciaddr set), so a test can
// switch the address between the first ACK and the renewal.
func startServer4(t *testing.T, n *testNet, lease time.Duration, addrFor func(renew bool) netip.Addr) {
	t.Helper()
	var conn net.PacketConn
	if err := inNetNS(n.isp, func() (err error) {
		conn, err = server4.NewIPv4UDPConn("isp0", &net.UDPAddr{Port: serverPort})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	sid := ispAddr.Addr().AsSlice()
	handler := func(c net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
		var typ dhcpv4.MessageType
		switch m.MessageType() {
		case dhcpv4.MessageTypeDiscover:
			typ = dhcpv4.MessageTypeOffer
		case dhcpv4.MessageTypeRequest:
			typ = dhcpv4.MessageTypeAck
		default:
			return
		}
		renew := !m.ClientIPAddr.IsUnspecified()
		r, err := dhcpv4.NewReplyFromRequest(m,
			dhcpv4.WithMessageType(typ),
			dhcpv4.WithYourIP(addrFor(renew).AsSlice()),
			dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
			dhcpv4.WithLeaseTime(uint32(lease/time.Second)),
			dhcpv4.WithRouter(sid),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(sid)),
		)
		if err != nil {
			t.Errorf("reply: %v", err)
			return
		}
		if _, err := c.WriteTo(r.ToBytes(), peer); err != nil {
			t.Logf("server4 send to %v: %v", peer, err)
		}
	}
	s, err := server4.NewServer("", nil, handler, server4.WithConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Serve(); close(done) }()
	t.Cleanup(func() { s.Close(); <-done })
}

func TestServer4ChangesAddressOnRenew(t *testing.T) {
	n := newTestNet(t)
	first, second := netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("198.18.0.20")
	startServer4(t, n, time.Minute, func(renew bool) netip.Addr {
		if renew {
			return second
		}
		return first
	})
	clk := &shiftClock{}
	tc := startClient(t, n, Options{Clock: clk})
	n.carrierUp(t)
	tc.c.LinkChanged(true)
	ev := tc.next(t, 2*time.Second)
	if ev.Kind != "bound" || ev.Prefix.Addr() != first || ev.Gateway != ispAddr.Addr() {
		t.Fatalf("first lease %+v", ev)
	}
	tc.waitState(t, StateBound, time.Second)
	clk.AdvanceTo(tc.c.Status().T1)
	ev = tc.next(t, 2*time.Second)
	if ev.Kind != "bound" || ev.Prefix != netip.PrefixFrom(second, 24) {
		t.Fatalf("renewal that changed the address gave %+v, want bound %v", ev, second)
	}
	if r := []string{<-tc.hooks, <-tc.hooks}; r[1] != "RENEW" {
		t.Errorf("hook reasons %v", r)
	}
	tc.waitState(t, StateBound, time.Second)
	if got := n.wanAddrs(t); !slices.Equal(got, []netip.Prefix{netip.PrefixFrom(second, 24)}) {
		t.Fatalf("wan0 has %v", got)
	}
}

// TestServer4Expiry lets a short lease run out with the server gone: the
// client must report "expired" at the expiry time and go back to DISCOVER
// through the raw socket.
func TestServer4Expiry(t *testing.T) {
	n := newTestNet(t)
	startServer4(t, n, time.Minute, func(bool) netip.Addr { return netip.MustParseAddr("198.18.0.10") })
	clk := &shiftClock{}
	tc := startClient(t, n, Options{Clock: clk})
	n.carrierUp(t)
	tc.c.LinkChanged(true)
	bound := tc.next(t, 2*time.Second)
	tc.waitState(t, StateBound, time.Second)
	// Take the ISP side down. wan0 loses carrier too, but the client is
	// not told: to it, this is a server that silently stopped answering.
	if err := n.hIsp.LinkSetDown(n.link(t, n.hIsp, "isp0")); err != nil {
		t.Fatal(err)
	}
	st := tc.c.Status()
	clk.AdvanceTo(st.T1)
	tc.waitState(t, StateRenewing, time.Second)
	if s := tc.c.sockets.Load(); s < 1 {
		t.Fatal("no socket in RENEWING")
	}
	clk.AdvanceTo(st.T2)
	tc.waitState(t, StateRebinding, time.Second)
	tc.noEvent(t, 100*time.Millisecond)
	clk.AdvanceTo(st.Expiry)
	ev := tc.next(t, time.Second)
	if ev.Kind != "expired" || ev.Prefix != bound.Prefix {
		t.Fatalf("expiry event %+v", ev)
	}
	tc.waitState(t, StateSelecting, time.Second)
	if len(n.wanAddrs(t)) != 0 {
		t.Fatal("test reducer kept the expired address")
	}
}

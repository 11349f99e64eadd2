package actions

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// requireRoot skips tests that create network namespaces.
func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces")
	}
}

// testNS is a named network namespace private to one test, removed on
// cleanup even when the test fails.
type testNS struct {
	name string
	ns   netns.NsHandle
	h    *netlink.Handle
}

func randSuffix(tb testing.TB) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// newNS creates "wract-<rand>-<role>". Creation happens on a dedicated locked
// thread that is discarded if it cannot return to its original namespace.
func newNS(tb testing.TB, role string) *testNS {
	tb.Helper()
	name := fmt.Sprintf("wract-%s-%s", randSuffix(tb), role)
	type res struct {
		ns  netns.NsHandle
		err error
	}
	c := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			c <- res{err: err}
			return
		}
		defer orig.Close()
		ns, err := netns.NewNamed(name)
		if err != nil {
			c <- res{err: err}
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			return
		}
		if err := netns.Set(orig); err != nil {
			c <- res{ns: ns, err: err}
			return // thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		c <- res{ns: ns}
	}()
	r := <-c
	if r.ns.IsOpen() || r.err == nil {
		tb.Cleanup(func() {
			r.ns.Close()
			if err := netns.DeleteNamed(name); err != nil {
				tb.Errorf("delete netns %s: %v", name, err)
			}
		})
	}
	if r.err != nil {
		tb.Fatalf("create netns %s: %v", name, r.err)
	}
	h, err := netlink.NewHandleAt(r.ns)
	if err != nil {
		tb.Fatalf("netlink handle in %s: %v", name, err)
	}
	tb.Cleanup(h.Close)
	return &testNS{name: name, ns: r.ns, h: h}
}

// addVeth creates name in t (admin-up) with its peer in peerNS (admin-up).
func addVeth(tb testing.TB, t, peerNS *testNS, name, peer string) netlink.Link {
	tb.Helper()
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: name},
		PeerName:      peer,
		PeerNamespace: netlink.NsFd(int(peerNS.ns)),
	}
	if err := t.h.LinkAdd(v); err != nil {
		tb.Fatalf("add veth %s/%s: %v", name, peer, err)
	}
	l, err := t.h.LinkByName(name)
	if err != nil {
		tb.Fatal(err)
	}
	if err := t.h.LinkSetUp(l); err != nil {
		tb.Fatal(err)
	}
	pl, err := peerNS.h.LinkByName(peer)
	if err != nil {
		tb.Fatal(err)
	}
	if err := peerNS.h.LinkSetUp(pl); err != nil {
		tb.Fatal(err)
	}
	return l
}

func mustAddr(tb testing.TB, h *netlink.Handle, link netlink.Link, p string) {
	tb.Helper()
	a, err := netlink.ParseAddr(p)
	if err != nil {
		tb.Fatal(err)
	}
	if err := h.AddrAdd(link, a); err != nil {
		tb.Fatalf("add %s: %v", p, err)
	}
}

// ourRules returns the proto-87 IPv4 rules of the namespace as strings.
func ourRules(tb testing.TB, h *netlink.Handle) []string {
	tb.Helper()
	ks, err := listRules(h)
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, k := range ks {
		if k.Protocol == Proto {
			out = append(out, ruleFromKernel(k).String())
		}
	}
	sort.Strings(out)
	return out
}

// allRules returns every IPv4 rule with its protocol.
func allRules(tb testing.TB, h *netlink.Handle) []string {
	tb.Helper()
	ks, err := listRules(h)
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, k := range ks {
		out = append(out, fmt.Sprintf("%s proto %d", ruleFromKernel(k), k.Protocol))
	}
	sort.Strings(out)
	return out
}

// tableRoutes returns every route of table (any protocol) as strings, with
// interface names resolved through names.
func tableRoutes(tb testing.TB, h *netlink.Handle, table int, names map[int]string) []string {
	tb.Helper()
	ks, err := listRoutes(h)
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, k := range ks {
		if k.Table == table {
			out = append(out, routeFromKernel(k, names).String())
		}
	}
	sort.Strings(out)
	return out
}

func linkNames(tb testing.TB, h *netlink.Handle) map[int]string {
	tb.Helper()
	ls, err := h.LinkList()
	if err != nil {
		tb.Fatal(err)
	}
	m := map[int]string{}
	for _, l := range ls {
		m[l.Attrs().Index] = l.Attrs().Name
	}
	return m
}

func ipnet(tb testing.TB, s string) *net.IPNet {
	tb.Helper()
	p := netip.MustParsePrefix(s)
	return prefixToIPNet(p)
}

// addUserObjects installs what a user (or another program) might have: a
// rule inside the daemon's priority block with another protocol, a rule of
// its own, routes in main, and a route in a daemon table. They must all
// survive everything but Cleanup (which flushes daemon tables entirely).
func addUserObjects(tb testing.TB, h *netlink.Handle, wan0 netlink.Link, foreignTable int) {
	tb.Helper()
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	r.Priority = 10100 // same slot as wan0's fwmark rule
	r.Mark = 0x100
	m := uint32(0xff00)
	r.Mask = &m
	r.Table = 10
	r.Protocol = unix.RTPROT_BOOT
	if err := h.RuleAdd(r); err != nil {
		tb.Fatalf("user rule: %v", err)
	}
	r2 := netlink.NewRule()
	r2.Family = unix.AF_INET
	r2.Priority = 500
	r2.Src = ipnet(tb, "192.0.2.0/24")
	r2.Table = 300
	r2.Protocol = unix.RTPROT_BOOT
	if err := h.RuleAdd(r2); err != nil {
		tb.Fatalf("user rule 2: %v", err)
	}
	for _, rt := range []*netlink.Route{
		{Dst: ipnet(tb, "0.0.0.0/0"), Gw: net.ParseIP("203.0.113.1"), LinkIndex: wan0.Attrs().Index, Protocol: unix.RTPROT_BOOT},
		{Dst: ipnet(tb, "192.0.2.0/25"), Gw: net.ParseIP("203.0.113.1"), LinkIndex: wan0.Attrs().Index, Protocol: unix.RTPROT_STATIC},
		{Dst: ipnet(tb, "192.0.2.128/25"), LinkIndex: wan0.Attrs().Index, Scope: netlink.SCOPE_LINK, Table: foreignTable, Protocol: unix.RTPROT_BOOT},
	} {
		if err := h.RouteAdd(rt); err != nil {
			tb.Fatalf("user route %v: %v", rt, err)
		}
	}
}

package actions

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

func writeNSSysctl(t *testing.T, ns *testNS, ifname, key, value string) {
	t.Helper()
	err := inNetns(ns.ns, func() error {
		return os.WriteFile(filepath.Join(sysctlRoot, ifname, key), []byte(value), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func findAddr(t *testing.T, ac *addrConn, index int, p string) (kernelAddr, bool) {
	t.Helper()
	all, err := ac.list()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range all {
		if a.Index == index && a.Prefix == netip.MustParsePrefix(p) {
			return a, true
		}
	}
	return kernelAddr{}, false
}

func TestManagedAddressAndSysctls(t *testing.T) {
	requireRoot(t)
	rns, isp := newNS(t, "r"), newNS(t, "isp")
	// New interfaces start from conf/default: make the kernel defaults
	// differ from what the reconciler must set, so the test can fail.
	writeNSSysctl(t, rns, "default", "rp_filter", "0")
	writeNSSysctl(t, rns, "default", "src_valid_mark", "0")
	writeNSSysctl(t, rns, "default", "promote_secondaries", "0")
	wan0 := addVeth(t, rns, isp, "wan0", "isp0")
	if err := rns.h.LinkSetDown(wan0); err != nil {
		t.Fatal(err)
	}
	mustAddr(t, rns.h, wan0, "192.0.2.9/24") // the user's own address
	idx := wan0.Attrs().Index

	r := newReconciler(t, rns)
	ac, err := newAddrConn(rns.ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ac.close)

	desired := func(addr string, ready bool) reactor.Desired {
		w := reactor.WANRouting{
			Name: "isp1", Interface: "wan0", Table: 10, Mark: 0x100,
			Gateway: netip.MustParseAddr("203.0.113.1"), Ready: ready, ManageAddress: true,
		}
		if addr != "" {
			w.Address = netip.MustParsePrefix(addr)
		}
		d := reactor.Desired{WANs: []reactor.WANRouting{w}}
		if ready {
			d.Active = []reactor.ActiveMember{{WAN: "isp1", Weight: 1}}
		}
		return d
	}
	// mainHasSubnet reports whether main has a route to the WAN subnet,
	// which the kernel adds for an address without noprefixroute.
	mainHasSubnet := func() bool {
		ks, err := listRoutes(rns.h)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			if k.Table == unix.RT_TABLE_MAIN && k.Dst != nil && k.Dst.String() == "203.0.113.0/24" {
				return true
			}
		}
		return false
	}
	checkSysctls := func() {
		t.Helper()
		for key, want := range map[string]string{"rp_filter": "2", "src_valid_mark": "1", "promote_secondaries": "1"} {
			got, err := readSysctl(rns.ns, "wan0", key)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("%s = %s, want %s", key, got, want)
			}
		}
	}

	t.Run("static address is added with noprefixroute and the link brought up", func(t *testing.T) {
		res := reconcile(t, r, desired("203.0.113.2/24", false))
		if !slices.Contains(res.Added, "link wan0 up") || !slices.Contains(res.Added, "address 203.0.113.2/24 dev wan0 noprefixroute") {
			t.Errorf("added: %q", res.Added)
		}
		a, ok := findAddr(t, ac, idx, "203.0.113.2/24")
		if !ok {
			t.Fatal("address not on wan0")
		}
		if a.Flags&unix.IFA_F_NOPREFIXROUTE == 0 || a.Proto != Proto {
			t.Errorf("address flags %#x proto %d, want noprefixroute and proto %d", a.Flags, a.Proto, Proto)
		}
		if mainHasSubnet() {
			t.Error("main table got a prefix route despite noprefixroute")
		}
		l, err := rns.h.LinkByIndex(idx)
		if err != nil {
			t.Fatal(err)
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			t.Error("wan0 still admin-down")
		}
		checkSysctls()
	})

	t.Run("ready installs the table with the managed source", func(t *testing.T) {
		reconcile(t, r, desired("203.0.113.2/24", true))
		got := tableRoutes(t, rns.h, 10, map[int]string{idx: "wan0"})
		assertEqual(t, "table 10", got, []string{
			"route table 10 203.0.113.0/24 dev wan0 scope link src 203.0.113.2",
			"route table 10 default via 203.0.113.1 dev wan0 src 203.0.113.2 onlink",
		})
		if res := reconcile(t, r, desired("203.0.113.2/24", true)); res.Changed() {
			t.Errorf("steady state changed: %+v", res)
		}
	})

	t.Run("new address replaces only the old managed one", func(t *testing.T) {
		res := reconcile(t, r, desired("203.0.113.3/24", true))
		if !slices.Contains(res.Added, "address 203.0.113.3/24 dev wan0 noprefixroute") ||
			!slices.Contains(res.Removed, "address 203.0.113.2/24 dev wan0") {
			t.Errorf("address change: %+v", res)
		}
		if _, ok := findAddr(t, ac, idx, "203.0.113.2/24"); ok {
			t.Error("old address still present")
		}
		if _, ok := findAddr(t, ac, idx, "192.0.2.9/24"); !ok {
			t.Error("user address removed")
		}
		if _, ok := findAddr(t, ac, idx, "203.0.113.3/24"); !ok {
			t.Fatal("new address gone (removed with the old primary?)")
		}
		assertEqual(t, "table 10", tableRoutes(t, rns.h, 10, map[int]string{idx: "wan0"}), []string{
			"route table 10 203.0.113.0/24 dev wan0 scope link src 203.0.113.3",
			"route table 10 default via 203.0.113.1 dev wan0 src 203.0.113.3 onlink",
		})
		got := tableRoutes(t, rns.h, 200, map[int]string{idx: "wan0"})
		assertEqual(t, "table 200", got, []string{"route table 200 default via 203.0.113.1 dev wan0 src 203.0.113.3 onlink"})
	})

	t.Run("existing address without noprefixroute is re-added", func(t *testing.T) {
		if err := ac.del(idx, netip.MustParsePrefix("203.0.113.3/24")); err != nil {
			t.Fatal(err)
		}
		mustAddr(t, rns.h, wan0, "203.0.113.3/24")
		if !mainHasSubnet() {
			t.Fatal("setup: plain address should have a prefix route in main")
		}
		reconcile(t, r, desired("203.0.113.3/24", true))
		a, ok := findAddr(t, ac, idx, "203.0.113.3/24")
		if !ok || a.Flags&unix.IFA_F_NOPREFIXROUTE == 0 {
			t.Errorf("address %+v present=%v, want noprefixroute", a, ok)
		}
		if mainHasSubnet() {
			t.Error("main prefix route still there")
		}
		// Deleting the address flushed the table routes using it as source;
		// the same pass must have put them back.
		if got := tableRoutes(t, rns.h, 10, nil); len(got) != 2 {
			t.Errorf("table 10 after re-add: %q", got)
		}
	})

	t.Run("lost lease removes the managed address only", func(t *testing.T) {
		res := reconcile(t, r, desired("", false))
		if !slices.Contains(res.Removed, "address 203.0.113.3/24 dev wan0") {
			t.Errorf("removed: %q", res.Removed)
		}
		all, err := ac.list()
		if err != nil {
			t.Fatal(err)
		}
		var on []string
		for _, a := range all {
			if a.Index == idx {
				on = append(on, a.Prefix.String())
			}
		}
		assertEqual(t, "addresses on wan0", on, []string{"192.0.2.9/24"})
	})

	t.Run("sysctls are re-applied when the interface reappears", func(t *testing.T) {
		if err := rns.h.LinkDel(wan0); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ReconcileOnce(desired("203.0.113.2/24", false)); err != nil {
			t.Fatal(err) // link absent: nothing to do, no error expected
		}
		wan0 = addVeth(t, rns, isp, "wan0", "isp0")
		idx = wan0.Attrs().Index
		if v, _ := readSysctl(rns.ns, "wan0", "rp_filter"); v != "0" {
			t.Fatalf("setup: new wan0 rp_filter=%s, want the default 0", v)
		}
		res := reconcile(t, r, desired("203.0.113.2/24", false))
		for _, want := range []string{"sysctl wan0 rp_filter=2", "sysctl wan0 src_valid_mark=1", "sysctl wan0 promote_secondaries=1"} {
			if !slices.Contains(res.Added, want) {
				t.Errorf("missing %q in %q", want, res.Added)
			}
		}
		checkSysctls()
	})

	t.Run("address change survives promote_secondaries reset to 0", func(t *testing.T) {
		// Someone reset the sysctl: deleting the old primary now also
		// deletes the new secondary; the pass must notice and repair.
		writeNSSysctl(t, rns, "wan0", "promote_secondaries", "0")
		res := reconcile(t, r, desired("203.0.113.5/24", true))
		if _, ok := findAddr(t, ac, idx, "203.0.113.5/24"); !ok {
			t.Fatalf("new address missing after the pass: %+v", res)
		}
		assertEqual(t, "table 10", tableRoutes(t, rns.h, 10, map[int]string{idx: "wan0"}), []string{
			"route table 10 203.0.113.0/24 dev wan0 scope link src 203.0.113.5",
			"route table 10 default via 203.0.113.1 dev wan0 src 203.0.113.5 onlink",
		})
		if res := reconcile(t, r, desired("203.0.113.5/24", true)); res.Changed() {
			t.Errorf("not settled after repair: %+v", res)
		}
	})
}

// TestForeignRouteBlocksActive: a user's default route in the active table
// (another protocol) is neither replaced nor deleted; the conflict is an
// error in the result, every pass.
func TestForeignRouteBlocksActive(t *testing.T) {
	l := newLab(t)
	user := &netlink.Route{
		Table: 200, Dst: ipnet(t, "0.0.0.0/0"), Gw: net.ParseIP("198.51.100.1"),
		LinkIndex: l.wan1.Attrs().Index, Protocol: unix.RTPROT_BOOT,
	}
	if err := l.r.h.RouteAdd(user); err != nil {
		t.Fatal(err)
	}
	r := newReconciler(t, l.r)
	for range 2 {
		res, err := r.ReconcileOnce(l.desired("isp1"))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Errors) != 1 {
			t.Errorf("errors: %v", res.Errors)
		}
		assertEqual(t, "foreign", res.Foreign, []string{"route table 200 default via 198.51.100.1 dev wan1 proto 3"})
	}
	assertEqual(t, "table 200", tableRoutes(t, l.r.h, 200, l.names),
		[]string{"route table 200 default via 198.51.100.1 dev wan1 proto 3"})
}

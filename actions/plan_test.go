package actions

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

func strs[T fmt.Stringer](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.String()
	}
	return out
}

func TestPlanModel(t *testing.T) {
	d := reactor.Desired{
		// Zeros: the defaults 200 / 10000 / 0xff00 apply.
		WANs: []reactor.WANRouting{
			{Name: "dsl", Interface: "wan0", Table: 10, Mark: 0x100, Address: netip.MustParsePrefix("203.0.113.2/24"),
				Gateway: netip.MustParseAddr("203.0.113.1"), Ready: false},
			{Name: "ppp", Interface: "ppp0", Table: 11, Mark: 0x200, Address: netip.MustParsePrefix("198.51.100.9/32"), Ready: true,
				ExtraRoutes: []reactor.StaticRoute{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("198.51.100.1")}}},
		},
		Active: []reactor.ActiveMember{{WAN: "dsl", Weight: 1}, {WAN: "ppp", Weight: 1}},
	}
	links := map[string]linkState{"wan0": {Index: 5, Up: true}, "ppp0": {Index: 7, Up: true}}
	w, errs := plan(d, links, SlotConfig{})
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "using ppp") {
		t.Errorf("errors: %v", errs)
	}
	want := []string{
		"rule 10100 fwmark 0x100/0xff00 lookup 10",
		"rule 10101 fwmark 0x200/0xff00 lookup 11",
		"rule 10001 from 198.51.100.9/32 lookup 11",
		"rule 10200 lookup main suppress_prefixlength 0",
		"rule 10299 lookup 200",
	}
	assertEqual(t, "rules", strs(w.Rules), want)
	// The /32 has no connected route; the option-121 default loses to the
	// gateway-less default built first (same key).
	assertEqual(t, "routes", strs(w.Routes), []string{
		"route table 11 default dev ppp0 scope link src 198.51.100.9",
		"route table 200 default dev ppp0 scope link src 198.51.100.9",
	})
	if !w.Tables[10] || !w.Tables[11] || !w.Tables[200] || len(w.Tables) != 3 {
		t.Errorf("tables: %v", w.Tables)
	}
}

func TestPlanRejectsBadInput(t *testing.T) {
	ok := reactor.WANRouting{Name: "a", Interface: "wan0", Table: 10, Mark: 0x100,
		Address: netip.MustParsePrefix("203.0.113.2/24"), Ready: true}
	links := map[string]linkState{"wan0": {Index: 3}, "wan1": {Index: 4}}
	cases := []struct {
		name    string
		mutate  func(*reactor.Desired)
		wantErr string
		check   func(t *testing.T, w wantState)
	}{
		{"zero desired", func(d *reactor.Desired) { *d = reactor.Desired{} }, "", func(t *testing.T, w wantState) {
			assertEqual(t, "rules", strs(w.Rules), []string{"rule 10200 lookup main suppress_prefixlength 0", "rule 10299 lookup 200"})
		}},
		{"mark outside mask", func(d *reactor.Desired) { d.WANs[0].Mark = 0x1 }, "no bits inside mask", func(t *testing.T, w wantState) {
			for _, r := range w.Rules {
				if r.HasMark {
					t.Errorf("fwmark rule installed for a zero mark: %s", r)
				}
			}
		}},
		{"main as WAN table", func(d *reactor.Desired) { d.WANs[0].Table = unix.RT_TABLE_MAIN }, "reserved", nil},
		{"WAN table equals active", func(d *reactor.Desired) { d.WANs[0].Table = 200 }, "active table", nil},
		{"reserved active table", func(d *reactor.Desired) { d.ActiveTable = unix.RT_TABLE_LOCAL }, "active table 255", func(t *testing.T, w wantState) {
			if len(w.Rules)+len(w.Routes) != 0 {
				t.Errorf("planned objects without a usable active table: %v %v", w.Rules, w.Routes)
			}
		}},
		{"duplicate table", func(d *reactor.Desired) {
			w := d.WANs[0]
			w.Name, w.Interface, w.Mark = "b", "wan1", 0x200
			d.WANs = append(d.WANs, w)
		}, "used by another WAN", nil},
		{"IPv6 address", func(d *reactor.Desired) { d.WANs[0].Address = netip.MustParsePrefix("2001:db8::2/64") }, "IPv4", nil},
		{"IPv6 gateway", func(d *reactor.Desired) { d.WANs[0].Gateway = netip.MustParseAddr("2001:db8::1") }, "IPv4", nil},
		{"IPv6 extra route", func(d *reactor.Desired) {
			d.WANs[0].ExtraRoutes = []reactor.StaticRoute{{Dst: netip.MustParsePrefix("2001:db8::/32")}}
		}, "not IPv4", nil},
		{"ready without address", func(d *reactor.Desired) { d.WANs[0].Address = netip.Prefix{} }, "without an IPv4 address", nil},
		{"interface missing", func(d *reactor.Desired) { d.WANs[0].Interface = "gone0" }, "not found", nil},
		{"unknown active member", func(d *reactor.Desired) { d.Active = []reactor.ActiveMember{{WAN: "nope"}} }, "active table left empty", nil},
		{"too many WANs", func(d *reactor.Desired) {
			for i := range 101 {
				d.WANs = append(d.WANs, reactor.WANRouting{Name: fmt.Sprint("w", i), Interface: "x", Table: 1000 + i, Mark: 0x100})
			}
		}, "do not fit", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := reactor.Desired{WANs: []reactor.WANRouting{ok}, Active: []reactor.ActiveMember{{WAN: "a", Weight: 1}}}
			c.mutate(&d)
			w, errs := plan(d, links, SlotConfig{})
			if c.wantErr == "" && len(errs) > 0 {
				t.Errorf("unexpected errors %v", errs)
			}
			if c.wantErr != "" {
				found := false
				for _, e := range errs {
					found = found || strings.Contains(e.Error(), c.wantErr)
				}
				if !found {
					t.Errorf("errors %v, want one containing %q", errs, c.wantErr)
				}
			}
			if c.check != nil {
				c.check(t, w)
			}
		})
	}
}

func TestDiffRules(t *testing.T) {
	a := ruleSpec{Priority: 10100, HasMark: true, Mark: 0x100, Mask: 0xff00, Table: 10, SuppressPrefixlen: -1}
	b := ruleSpec{Priority: 10299, Table: 200, SuppressPrefixlen: -1}
	odd := a
	odd.Extra = "iif lan0"
	stale := ruleSpec{Priority: 10002, Src: netip.MustParsePrefix("192.0.2.1/32"), Table: 12, SuppressPrefixlen: -1}
	d := diffRules([]ruleSpec{a, b}, []ruleSpec{a, a, odd, stale})
	assertEqual(t, "add", strs(d.Add), []string{b.String()})
	assertEqual(t, "del", strs(d.Del), []string{a.String(), odd.String(), stale.String()})
	if d := diffRules([]ruleSpec{a, b}, []ruleSpec{b, a}); len(d.Add)+len(d.Del) != 0 {
		t.Errorf("equal sets differ: %+v", d)
	}
}

func TestDiffRoutes(t *testing.T) {
	def := func(table int, gw string) routeSpec {
		return routeSpec{Table: table, Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr(gw), LinkIndex: 3,
			Src: netip.MustParseAddr("203.0.113.2"), Onlink: true, Type: unix.RTN_UNICAST, Protocol: Proto}
	}
	conn := routeSpec{Table: 10, Dst: netip.MustParsePrefix("203.0.113.0/24"), LinkIndex: 3, Scope: unix.RT_SCOPE_LINK,
		Src: netip.MustParseAddr("203.0.113.2"), Type: unix.RTN_UNICAST, Protocol: Proto}
	w := wantState{Routes: []routeSpec{def(200, "203.0.113.1"), def(10, "203.0.113.1"), conn},
		Tables: map[int]bool{10: true, 200: true}, Active: 200}

	foreignConn := conn
	foreignConn.Protocol = unix.RTPROT_BOOT
	orphan := def(12, "192.0.2.1")
	userMain := def(unix.RT_TABLE_MAIN, "192.0.2.1")
	userMain.Protocol = unix.RTPROT_BOOT
	kernel := []routeSpec{def(200, "203.0.113.99"), def(10, "203.0.113.1"), def(10, "203.0.113.1"), foreignConn, orphan, userMain}

	d := diffRoutes(w, kernel)
	if len(d.Set) != 1 || d.Set[0].Old == nil || d.Set[0].Spec.Table != 200 {
		t.Fatalf("set: %+v", d.Set)
	}
	assertEqual(t, "del", strs(d.Del), []string{def(10, "203.0.113.1").String(), orphan.String()})
	assertEqual(t, "foreign", strs(d.Foreign), []string{foreignConn.String()})
	assertEqual(t, "blocked", strs(d.Blocked), []string{conn.String()})

	// Creations: WAN tables before the active table.
	d = diffRoutes(w, nil)
	var order []int
	for _, op := range d.Set {
		order = append(order, op.Spec.Table)
	}
	if fmt.Sprint(order) != "[10 10 200]" {
		t.Errorf("application order by table: %v", order)
	}
}

func TestBroadcast(t *testing.T) {
	for in, want := range map[string]string{"203.0.113.2/24": "203.0.113.255", "10.1.2.3/8": "10.255.255.255", "192.0.2.5/30": "192.0.2.7"} {
		if got := broadcast(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("broadcast(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestParseAddrsRejectsShortMessages(t *testing.T) {
	if _, err := parseAddrs([][]byte{{1, 2, 3}}); err == nil {
		t.Error("short message accepted")
	}
}

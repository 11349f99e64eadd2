package actions

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/wanreact/wanreact/config"
	"github.com/wanreact/wanreact/reactor"
)

func TestSlotMarkStaysClearOfWANMarks(t *testing.T) {
	for _, tc := range []struct {
		mask  uint32
		s     int
		want  uint32
		label string
	}{
		{0xff00, 0, 0x8000, "first slot"}, {0xff00, 1, 0x8100, "second"}, {0xff00, 127, 0xff00, "last"},
		{0xff00, 128, 0, "beyond the mask"}, {0xff00, -1, 0, "negative"},
		{0xf0, 0, 0x80, "narrow mask"}, {0xf0, 7, 0xf0, "narrow, last"},
		{0xf0f0, 0, 0, "split mask"}, {0, 0, 0, "no mask"},
	} {
		if got := SlotMark(tc.mask, tc.s); got != tc.want {
			t.Errorf("%s: SlotMark(%#x, %d) = %#x, want %#x", tc.label, tc.mask, tc.s, got, tc.want)
		}
	}
	// Every WAN mark and every slot mark that fits is distinct and inside
	// the mask: a slot mark must never select a WAN's table.
	for _, mask := range []uint32{0xff00, 0xf0, 0x3000, 0xffff0000} {
		wans, slots := config.MarkRoom(mask)
		seen := map[uint32]string{}
		for i := range min(wans, 300) {
			m := reactor.Mark(mask, i)
			seen[m] = fmt.Sprint("wan ", i)
		}
		for s := range min(slots, 300) {
			m := SlotMark(mask, s)
			if m == 0 || m&^mask != 0 {
				t.Fatalf("mask %#x slot %d: mark %#x outside the mask", mask, s, m)
			}
			if other, dup := seen[m]; dup {
				t.Fatalf("mask %#x: slot %d mark %#x equals %s", mask, s, m, other)
			}
			seen[m] = fmt.Sprint("slot ", s)
		}
	}
}

func balancedDesired(slots ...string) reactor.Desired {
	return reactor.Desired{
		WANs: []reactor.WANRouting{
			{Name: "a", Interface: "wan0", Table: 10, Mark: 0x100, Address: netip.MustParsePrefix("203.0.113.2/24"),
				Gateway: netip.MustParseAddr("203.0.113.1"), Ready: true},
			{Name: "b", Interface: "wan1", Table: 11, Mark: 0x200, Address: netip.MustParsePrefix("198.51.100.2/24"),
				Gateway: netip.MustParseAddr("198.51.100.1"), Ready: true},
		},
		Active: []reactor.ActiveMember{{WAN: "a", Weight: 2}, {WAN: "b", Weight: 1}},
		Slots:  slots,
	}
}

var planLinks = map[string]linkState{"wan0": {Index: 5, Up: true}, "wan1": {Index: 6, Up: true}}

func TestPlanSlots(t *testing.T) {
	sc := SlotConfig{Count: 4, Table: 1000}
	w, errs := plan(balancedDesired("a", "b", "a"), planLinks, sc)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	wantRules := []string{
		"rule 10100 fwmark 0x100/0xff00 lookup 10",
		"rule 10000 from 203.0.113.2/32 lookup 10",
		"rule 10101 fwmark 0x200/0xff00 lookup 11",
		"rule 10001 from 198.51.100.2/32 lookup 11",
		"rule 10200 lookup main suppress_prefixlength 0",
		"rule 10201 fwmark 0x8000/0xff00 lookup 1000",
		"rule 10202 fwmark 0x8100/0xff00 lookup 1001",
		"rule 10203 fwmark 0x8200/0xff00 lookup 1002",
		"rule 10204 fwmark 0x8300/0xff00 lookup 1003",
		"rule 10299 lookup 200",
	}
	assertEqual(t, "rules", strs(w.Rules), wantRules)
	var slotRoutes []string
	for _, r := range w.Routes {
		if r.Table >= 1000 || r.Table == 200 {
			slotRoutes = append(slotRoutes, r.String())
		}
	}
	// Slot 3 has no WAN (fewer Slots than configured): its table stays
	// empty and lookups fall through to the active table.
	assertEqual(t, "slot and active routes", slotRoutes, []string{
		"route table 1000 default via 203.0.113.1 dev wan0 src 203.0.113.2 onlink",
		"route table 1001 default via 198.51.100.1 dev wan1 src 198.51.100.2 onlink",
		"route table 1002 default via 203.0.113.1 dev wan0 src 203.0.113.2 onlink",
		"route table 200 default nexthop via 203.0.113.1 dev wan0 weight 2 onlink nexthop via 198.51.100.1 dev wan1 weight 1 onlink",
	})
	for table := 1000; table < 1004; table++ {
		if !w.Tables[table] {
			t.Errorf("slot table %d not owned", table)
		}
	}

	// A failover (b only), and then no WAN at all, change routes only:
	// the rules are the same objects.
	for _, d := range []reactor.Desired{balancedDesired("b", "b", "b", "b"), {WANs: balancedDesired().WANs}} {
		if len(d.Slots) > 0 {
			d.Active = d.Active[1:]
		}
		w2, errs := plan(d, planLinks, sc)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		got := strs(w2.Rules)
		if len(d.Slots) == 0 {
			// Not Ready WANs lose their "from" rules, which is WAN
			// state, not balancing: compare the rest.
			got = slices.DeleteFunc(got, func(s string) bool { return strings.Contains(s, " from ") })
			assertEqual(t, "rules without any active WAN", got,
				slices.DeleteFunc(slices.Clone(wantRules), func(s string) bool { return strings.Contains(s, " from ") }))
			continue
		}
		assertEqual(t, "rules after failover", got, wantRules)
	}
}

func TestPlanSlotsRejectsWhatDoesNotFit(t *testing.T) {
	for _, tc := range []struct {
		name string
		sc   SlotConfig
		mask uint32
		want string
	}{
		{"slot table is a WAN table", SlotConfig{Count: 4, Table: 8}, 0, "slot table 10 is reserved, invalid or used"},
		{"slot table over main", SlotConfig{Count: 4, Table: 252}, 0, "slot table 253 is reserved"},
		{"too many slots", SlotConfig{Count: 99}, 0, "do not fit the rule priority block"},
		{"mask too narrow", SlotConfig{Count: 2}, 0x300, "no room for 2 WAN marks and 2 slot marks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := balancedDesired("a", "b")
			d.MarkMask = tc.mask
			w, errs := plan(d, planLinks, tc.sc)
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want) {
				t.Fatalf("errors %v, want one containing %q", errs, tc.want)
			}
			for _, r := range w.Rules {
				if r.Priority > 10200 && r.Priority < 10299 {
					t.Errorf("slot rule planned anyway: %s", r)
				}
			}
		})
	}
}

func TestMultipathWeight(t *testing.T) {
	for _, tc := range []struct {
		all  []int
		want []int
	}{
		{[]int{2, 1}, []int{2, 1}},
		{[]int{256, 3}, []int{256, 3}},
		{[]int{1000, 500, 1}, []int{256, 128, 1}},
	} {
		var got []int
		for _, w := range tc.all {
			got = append(got, multipathWeight(w, tc.all))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("weights %v -> %v, want %v", tc.all, got, tc.want)
		}
	}
}

// TestReconcileSlots runs the balancing routing against a kernel: the slot
// rules steer marked packets, a failover replaces routes only, and the
// multipath active route survives a steady-state pass unchanged.
func TestReconcileSlots(t *testing.T) {
	l := newLab(t)
	r, err := NewReconciler(Options{NetNS: l.r.ns, Slots: SlotConfig{Count: 3, Table: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	d := l.desired("isp1", "isp2")
	d.Active[0].Weight = 2
	d.Slots = []string{"isp1", "isp2", "isp1"}
	reconcile(t, r, d)
	if res := reconcile(t, r, d); res.Changed() {
		t.Fatalf("steady state changed something (multipath round trip?): %+v", res)
	}
	assertEqual(t, "active table", tableRoutes(t, l.r.h, 200, l.names), []string{
		"route table 200 default nexthop via 203.0.113.1 dev wan0 weight 2 onlink nexthop via 198.51.100.1 dev wan1 weight 1 onlink",
	})
	rulesBefore := ourRules(t, l.r.h)
	for _, want := range []string{"rule 10201 fwmark 0x8000/0xff00 lookup 1000", "rule 10203 fwmark 0x8200/0xff00 lookup 1002", "rule 10299 lookup 200"} {
		if !slices.Contains(rulesBefore, want) {
			t.Errorf("rule %q missing: %q", want, rulesBefore)
		}
	}
	routeDev := func(mark uint32) string {
		t.Helper()
		rs, err := l.r.h.RouteGetWithOptions(net.ParseIP("192.0.2.99"), &netlink.RouteGetOptions{Mark: mark})
		if err != nil || len(rs) == 0 {
			t.Fatalf("route get mark %#x: %v", mark, err)
		}
		return l.names[rs[0].LinkIndex]
	}
	if got := [3]string{routeDev(0x8000), routeDev(0x8100), routeDev(0x8200)}; got != [3]string{"wan0", "wan1", "wan0"} {
		t.Errorf("slots route via %v, want wan0 wan1 wan0", got)
	}

	// Failover to isp2: the two isp1 slots and the active route are
	// replaced in place, nothing is added or removed.
	d2 := l.desired("isp2")
	d2.Slots = []string{"isp2", "isp2", "isp2"}
	res := reconcile(t, r, d2)
	if len(res.Added)+len(res.Removed) != 0 || len(res.Replaced) != 3 {
		t.Fatalf("failover: added %q removed %q replaced %q", res.Added, res.Removed, res.Replaced)
	}
	if got := [3]string{routeDev(0x8000), routeDev(0x8100), routeDev(0x8200)}; got != [3]string{"wan1", "wan1", "wan1"} {
		t.Errorf("after failover slots route via %v, want wan1 everywhere", got)
	}
	assertEqual(t, "rules after failover", ourRules(t, l.r.h), rulesBefore)

	// No active WAN: slot tables empty, rules still there, a marked packet
	// falls through to the (empty) active table and then main.
	res = reconcile(t, r, l.desired())
	if len(res.Added) != 0 || len(res.Removed) != 4 {
		t.Errorf("no active WAN: added %q removed %q", res.Added, res.Removed)
	}
	assertEqual(t, "rules without active WANs", ourRules(t, l.r.h), rulesBefore)

	// A reload that turns balancing off removes the slot rules.
	r.SetSlots(SlotConfig{})
	res = reconcile(t, r, l.desired("isp1"))
	if n := len(slices.DeleteFunc(slices.Clone(res.Removed), func(s string) bool { return !strings.Contains(s, "fwmark 0x8") })); n != 3 {
		t.Errorf("balancing off removed %d slot rules, want 3: %q", n, res.Removed)
	}

	if err := Cleanup(l.r.h, append([]int{10, 11, 200}, SlotConfig{Count: 3, Table: 1000}.Tables()...), nil); err != nil {
		t.Fatal(err)
	}
	if got := ourRules(t, l.r.h); len(got) != 0 {
		t.Errorf("rules after cleanup: %q", got)
	}
}

// TestWaitApplied: a conntrack flush waits for the pass that applies the
// Desired handed over before it.
func TestWaitApplied(t *testing.T) {
	l := newLab(t)
	r, err := NewReconciler(Options{NetNS: l.r.ns, Period: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if err := r.WaitApplied(t.Context(), r.Generation()); err != nil {
		t.Fatalf("nothing handed over yet, but WaitApplied: %v", err)
	}
	r.Set(l.desired("isp1"))
	gen := r.Generation()
	short, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := r.WaitApplied(short, gen); err == nil {
		t.Fatal("WaitApplied returned before Run applied anything")
	}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx, nil) }()
	defer func() { stop(); <-done }()
	wctx, wcancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer wcancel()
	if err := r.WaitApplied(wctx, gen); err != nil {
		t.Fatalf("WaitApplied after Run: %v", err)
	}
	// By then the route is in the kernel.
	if got := tableRoutes(t, l.r.h, 200, l.names); len(got) != 1 {
		t.Errorf("active table after WaitApplied: %q", got)
	}
}

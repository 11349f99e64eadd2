package actions

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

// lab is a router namespace with two WAN veths whose peers sit in an ISP
// namespace. Addresses are put on by the test (addressing: external).
type lab struct {
	r, isp     *testNS
	wan0, wan1 netlink.Link
	names      map[int]string
	// userRoute is set once addUserObjects put a route into table 10.
	userRoute bool
}

func newLab(t testing.TB) *lab {
	t.Helper()
	requireRoot(t)
	l := &lab{r: newNS(t, "r"), isp: newNS(t, "isp")}
	l.wan0 = addVeth(t, l.r, l.isp, "wan0", "isp0")
	l.wan1 = addVeth(t, l.r, l.isp, "wan1", "isp1")
	mustAddr(t, l.r.h, l.wan0, "203.0.113.2/24")
	mustAddr(t, l.r.h, l.wan1, "198.51.100.2/24")
	l.names = linkNames(t, l.r.h)
	return l
}

func (l *lab) desired(active ...string) reactor.Desired {
	d := reactor.Desired{
		ActiveTable: 200, RulePriority: 10000, MarkMask: 0xff00,
		WANs: []reactor.WANRouting{
			{
				Name: "isp1", Interface: "wan0", Index: l.wan0.Attrs().Index, Table: 10, Mark: 0x100,
				Address: netip.MustParsePrefix("203.0.113.2/24"), Gateway: netip.MustParseAddr("203.0.113.1"),
				Ready: true,
				ExtraRoutes: []reactor.StaticRoute{
					{Dst: netip.MustParsePrefix("198.18.0.0/15"), Gateway: netip.MustParseAddr("203.0.113.254")},
					{Dst: netip.MustParsePrefix("203.0.113.128/25")},
				},
			},
			{
				Name: "isp2", Interface: "wan1", Index: l.wan1.Attrs().Index, Table: 11, Mark: 0x200,
				Address: netip.MustParsePrefix("198.51.100.2/24"), Gateway: netip.MustParseAddr("198.51.100.1"),
				Ready: true,
			},
		},
	}
	for _, a := range active {
		d.Active = append(d.Active, reactor.ActiveMember{WAN: a, Weight: 1})
	}
	return d
}

func newReconciler(t testing.TB, ns *testNS) *Reconciler {
	t.Helper()
	r, err := NewReconciler(Options{NetNS: ns.ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func reconcile(t testing.TB, r *Reconciler, d reactor.Desired) Result {
	t.Helper()
	res, err := r.ReconcileOnce(d)
	if err != nil {
		t.Fatalf("ReconcileOnce: %v", err)
	}
	if len(res.Errors) > 0 {
		t.Fatalf("ReconcileOnce errors: %v", res.Errors)
	}
	return res
}

// routingChanges drops the sysctl lines, which depend on the namespace's
// defaults rather than on the routing being tested.
func routingChanges(ss []string) []string {
	var out []string
	for _, s := range ss {
		if !strings.HasPrefix(s, "sysctl ") {
			out = append(out, s)
		}
	}
	return out
}

func assertEqual(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

var (
	wantRules = []string{
		"rule 10000 from 203.0.113.2/32 lookup 10",
		"rule 10001 from 198.51.100.2/32 lookup 11",
		"rule 10100 fwmark 0x100/0xff00 lookup 10",
		"rule 10101 fwmark 0x200/0xff00 lookup 11",
		"rule 10200 lookup main suppress_prefixlength 0",
		"rule 10299 lookup 200",
	}
	wantTable10 = []string{
		"route table 10 192.0.2.128/25 dev wan0 scope link proto 3", // the user's, left alone
		"route table 10 198.18.0.0/15 via 203.0.113.254 dev wan0 src 203.0.113.2 onlink",
		"route table 10 203.0.113.0/24 dev wan0 scope link src 203.0.113.2",
		"route table 10 203.0.113.128/25 dev wan0 scope link src 203.0.113.2",
		"route table 10 default via 203.0.113.1 dev wan0 src 203.0.113.2 onlink",
	}
	wantTable11 = []string{
		"route table 11 198.51.100.0/24 dev wan1 scope link src 198.51.100.2",
		"route table 11 default via 198.51.100.1 dev wan1 src 198.51.100.2 onlink",
	}
)

func (l *lab) assertState(t *testing.T, activeRoute string) {
	t.Helper()
	assertEqual(t, "our rules", ourRules(t, l.r.h), wantRules)
	want10 := wantTable10
	if !l.userRoute {
		want10 = want10[1:]
	}
	assertEqual(t, "table 10", tableRoutes(t, l.r.h, 10, l.names), want10)
	assertEqual(t, "table 11", tableRoutes(t, l.r.h, 11, l.names), wantTable11)
	var want200 []string
	if activeRoute != "" {
		want200 = []string{activeRoute}
	}
	assertEqual(t, "table 200", tableRoutes(t, l.r.h, 200, l.names), want200)
}

// assertUserObjects checks that what addUserObjects installed outside the
// daemon's tables is intact.
func (l *lab) assertUserObjects(t *testing.T) {
	t.Helper()
	rules := allRules(t, l.r.h)
	for _, want := range []string{
		"rule 10100 fwmark 0x100/0xff00 lookup 10 proto 3",
		"rule 500 from 192.0.2.0/24 lookup 300 proto 3",
	} {
		if !slices.Contains(rules, want) {
			t.Errorf("user rule %q missing; rules: %q", want, rules)
		}
	}
	main := tableRoutes(t, l.r.h, unix.RT_TABLE_MAIN, l.names)
	for _, want := range []string{
		"route table main default via 203.0.113.1 dev wan0 proto 3",
		"route table main 192.0.2.0/25 via 203.0.113.1 dev wan0 proto 4",
	} {
		if !slices.Contains(main, want) {
			t.Errorf("user route %q missing; main: %q", want, main)
		}
	}
}

func TestReconcileLifecycle(t *testing.T) {
	l := newLab(t)
	addUserObjects(t, l.r.h, l.wan0, 10)
	l.userRoute = true
	r := newReconciler(t, l.r)
	active0 := "route table 200 default via 203.0.113.1 dev wan0 src 203.0.113.2 onlink"
	active1 := "route table 200 default via 198.51.100.1 dev wan1 src 198.51.100.2 onlink"

	t.Run("first pass creates exactly the model", func(t *testing.T) {
		res := reconcile(t, r, l.desired("isp1", "isp2"))
		l.assertState(t, active0)
		// 6 rules + 4 routes in table 10 + 2 in table 11 + 1 in table 200.
		if got := len(routingChanges(res.Added)); got != 13 || len(res.Removed) != 0 || len(res.Replaced) != 0 {
			t.Errorf("first pass: added %d (want 13), removed %q, replaced %q", got, res.Removed, res.Replaced)
		}
		assertEqual(t, "foreign", res.Foreign, []string{"route table 10 192.0.2.128/25 dev wan0 scope link proto 3"})
	})

	t.Run("second pass changes nothing", func(t *testing.T) {
		res := reconcile(t, r, l.desired("isp1", "isp2"))
		if res.Changed() {
			t.Errorf("steady state changed something: %+v", res)
		}
	})

	t.Run("failover is one replace in the active table", func(t *testing.T) {
		updates := make(chan netlink.RouteUpdate, 64)
		done := make(chan struct{})
		defer close(done)
		ns := l.r.ns
		if err := netlink.RouteSubscribeWithOptions(updates, done, netlink.RouteSubscribeOptions{Namespace: &ns}); err != nil {
			t.Fatal(err)
		}
		res := reconcile(t, r, l.desired("isp2", "isp1"))
		if len(res.Added) != 0 || len(res.Removed) != 0 || len(res.Replaced) != 1 {
			t.Fatalf("failover: %+v", res)
		}
		l.assertState(t, active1)
		// The kernel must have seen exactly one RTM_NEWROUTE (replace) and
		// no RTM_DELROUTE: no instant without a default route.
		var events []string
		deadline := time.After(300 * time.Millisecond)
	collect:
		for {
			select {
			case u := <-updates:
				kind := "new"
				if u.Type == unix.RTM_DELROUTE {
					kind = "del"
				}
				events = append(events, kind+" "+routeFromKernel(u.Route, l.names).String())
			case <-deadline:
				break collect
			}
		}
		assertEqual(t, "route events", events, []string{"new " + active1})
	})

	t.Run("empty active set empties the active table", func(t *testing.T) {
		res := reconcile(t, r, l.desired())
		assertEqual(t, "removed", res.Removed, []string{active1})
		l.assertState(t, "")
		reconcile(t, r, l.desired("isp1"))
		l.assertState(t, active0)
	})

	t.Run("hand-deleted rule and flushed table are restored", func(t *testing.T) {
		del := ruleSpec{Priority: 10101, HasMark: true, Mark: 0x200, Mask: 0xff00, Table: 11, SuppressPrefixlen: -1}
		if err := l.r.h.RuleDel(del.toKernel()); err != nil {
			t.Fatal(err)
		}
		ks, err := listRoutes(l.r.h)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			if k.Table == 11 {
				if err := l.r.h.RouteDel(&k); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got := tableRoutes(t, l.r.h, 11, l.names); len(got) != 0 {
			t.Fatalf("table 11 not flushed: %q", got)
		}
		res := reconcile(t, r, l.desired("isp1"))
		if len(res.Added) != 3 || len(res.Removed) != 0 {
			t.Errorf("repair: %+v", res)
		}
		l.assertState(t, active0)
	})

	t.Run("user objects survive", l.assertUserObjects)

	t.Run("fresh reconciler adopts leftovers", func(t *testing.T) {
		// A second process (after kill -9) with the same desired state.
		r2 := newReconciler(t, l.r)
		res := reconcile(t, r2, l.desired("isp1"))
		if got := routingChanges(res.Added); len(got) != 0 || len(res.Removed) != 0 || len(res.Replaced) != 0 {
			t.Errorf("adoption changed things: added %q removed %q replaced %q", got, res.Removed, res.Replaced)
		}
		l.assertState(t, active0)
	})

	t.Run("WAN not ready keeps only its fwmark rule", func(t *testing.T) {
		d := l.desired("isp1")
		d.WANs[1].Ready = false
		res := reconcile(t, r, d)
		assertEqual(t, "removed", res.Removed, []string{
			"rule 10001 from 198.51.100.2/32 lookup 11",
			"route table 11 198.51.100.0/24 dev wan1 scope link src 198.51.100.2",
			"route table 11 default via 198.51.100.1 dev wan1 src 198.51.100.2 onlink",
		})
		if got := tableRoutes(t, l.r.h, 11, l.names); len(got) != 0 {
			t.Errorf("table 11 of a non-ready WAN: %q", got)
		}
		if !slices.Contains(ourRules(t, l.r.h), "rule 10101 fwmark 0x200/0xff00 lookup 11") {
			t.Error("fwmark rule of the non-ready WAN was removed")
		}
		reconcile(t, r, l.desired("isp1"))
		l.assertState(t, active0)
	})

	t.Run("cleanup removes ours and nothing else", func(t *testing.T) {
		var lines []string
		if err := Cleanup(l.r.h, []int{10, 11, 200}, func(s string) { lines = append(lines, s) }); err != nil {
			t.Fatal(err)
		}
		// 6 rules + 4 + 1 routes of ours + the user's route in table 10.
		if len(lines) != 6+4+2+1+1 {
			t.Errorf("cleanup reported %d lines: %q", len(lines), lines)
		}
		if got := ourRules(t, l.r.h); len(got) != 0 {
			t.Errorf("rules left: %q", got)
		}
		for _, table := range []int{10, 11, 200} {
			if got := tableRoutes(t, l.r.h, table, l.names); len(got) != 0 {
				t.Errorf("table %d left: %q", table, got)
			}
		}
		l.assertUserObjects(t)
	})
}

// TestRunFailoverLatency measures the time from Set to the kernel's
// notification of the new active route, through the Run loop.
func TestRunFailoverLatency(t *testing.T) {
	l := newLab(t)
	r := newReconciler(t, l.r)
	reconcile(t, r, l.desired("isp1", "isp2"))

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	results := make(chan Result, 16)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := r.Run(ctx, func(res Result) {
			select {
			case results <- res:
			default:
			}
		}); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	defer func() { cancel(); wg.Wait() }()

	updates := make(chan netlink.RouteUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	ns := l.r.ns
	if err := netlink.RouteSubscribeWithOptions(updates, done, netlink.RouteSubscribeOptions{Namespace: &ns}); err != nil {
		t.Fatal(err)
	}

	var worst time.Duration
	gws := []string{"198.51.100.1", "203.0.113.1"}
	for i := range 10 {
		order := []string{"isp2", "isp1"}
		if i%2 == 1 {
			order = []string{"isp1", "isp2"}
		}
		start := time.Now()
		r.Set(l.desired(order...))
		deadline := time.After(2 * time.Second)
	wait:
		for {
			select {
			case u := <-updates:
				if u.Table == 200 && u.Type == unix.RTM_NEWROUTE && u.Gw.String() == gws[i%2] {
					break wait
				}
			case <-deadline:
				t.Fatalf("round %d: active route not switched within 2s", i)
			}
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("Set -> kernel route notification, worst of 10 failovers: %v", worst)
	if worst > 50*time.Millisecond {
		t.Errorf("failover took %v, the end-to-end budget is 50ms", worst)
	}
	cancel()
	wg.Wait()
	l.assertState(t, "route table 200 default via 203.0.113.1 dev wan0 src 203.0.113.2 onlink")
}

func TestKickRepairsThroughRun(t *testing.T) {
	l := newLab(t)
	r, err := NewReconciler(Options{NetNS: l.r.ns, Period: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	ctx, cancel := context.WithCancel(t.Context())
	passes := make(chan Result, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = r.Run(ctx, func(res Result) { passes <- res })
	}()
	defer func() { cancel(); wg.Wait() }()

	next := func() Result {
		select {
		case res := <-passes:
			return res
		case <-time.After(2 * time.Second):
			t.Fatal("no reconcile pass within 2s")
		}
		return Result{}
	}
	r.Set(l.desired("isp1"))
	if res := next(); len(res.Errors) > 0 || len(routingChanges(res.Added)) != 13 {
		t.Fatalf("first pass: %+v", res)
	}
	if err := l.r.h.RuleDel((&ruleSpec{Priority: 10299, Table: 200, SuppressPrefixlen: -1}).toKernel()); err != nil {
		t.Fatal(err)
	}
	// With a one-hour period only Kick can trigger the repair.
	r.Kick()
	res := next()
	assertEqual(t, "repaired", res.Added, []string{"rule 10299 lookup 200"})
}

// BenchmarkReconcileSteadyState is the cost of the periodic pass when the
// kernel already matches: two WANs, user objects present, nothing to change.
func BenchmarkReconcileSteadyState(b *testing.B) {
	l := newLab(b)
	addUserObjects(b, l.r.h, l.wan0, 10)
	r := newReconciler(b, l.r)
	d := l.desired("isp1", "isp2")
	reconcile(b, r, d)
	b.ReportAllocs()
	for b.Loop() {
		res, err := r.ReconcileOnce(d)
		if err != nil || res.Changed() || len(res.Errors) > 0 {
			b.Fatalf("steady state pass: %+v %v", res, err)
		}
	}
}

package lab

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("lab tests need root to create network namespaces")
	}
	for _, tool := range []string{"ip", "iptables-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("lab tests need %s: %v", tool, err)
		}
	}
}

// newLab sweeps leftovers of dead test runs, builds a lab and registers its
// teardown, which also asserts that no namespace survives Close.
func newLab(t *testing.T, opts Options) *Lab {
	t.Helper()
	requireRoot(t)
	if swept, err := Sweep(); err != nil {
		t.Logf("sweep: %v", err)
	} else if len(swept) > 0 {
		t.Logf("swept leftovers: %v", swept)
	}
	start := time.Now()
	l, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Logf("lab %s with %d ISPs built in %v", l.Prefix(), l.ISPs(), time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if left := namespacesWithPrefix(t, l.Prefix()); len(left) > 0 {
			t.Errorf("namespaces left after Close: %v", left)
		}
		if _, err := os.Stat(filepath.Join(PidDir, l.Prefix()+".pid")); err == nil {
			t.Errorf("pid file left after Close")
		}
	})
	return l
}

func namespacesWithPrefix(t *testing.T, prefix string) []string {
	t.Helper()
	ents, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var r []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			r = append(r, e.Name())
		}
	}
	return r
}

func mustExec(t *testing.T, l *Lab, role string, args ...string) string {
	t.Helper()
	out, err := l.Exec(role, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// settle lets the sink's goroutine catch up before a snapshot is taken, so
// that packets sent at the very end of a window are not counted as lost.
const settle = 50 * time.Millisecond

// window sleeps d and returns the interval it slept.
func window(d time.Duration) (time.Time, time.Time) {
	a := time.Now()
	time.Sleep(d)
	return a, time.Now()
}

// waitForISP polls the flow until a packet carried by isp arrives after t,
// for at most timeout.
func waitForISP(t *testing.T, f *Flow, isp int, after time.Time, timeout time.Duration) Recv {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p, ok := f.Snapshot().FirstAfter(after, isp); ok {
			return p
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no packet via ISP %d within %v after %v", isp, timeout, after.Format("15:04:05.000"))
	return Recv{}
}

func TestTwoISPs(t *testing.T) {
	l := newLab(t, Options{ISPs: 2, RouterAddrs: true, RouterNAT: true})

	for _, r := range l.Roles() {
		if _, err := os.Stat(filepath.Join(netnsDir, l.NS(r))); err != nil {
			t.Fatalf("namespace of %s: %v", r, err)
		}
	}
	if got := mustExec(t, l, RoleRouter, "ip", "-4", "-o", "addr", "show", "dev", "wan1"); !strings.Contains(got, "203.0.113.3/24") {
		t.Fatalf("wan1 address: %q", got)
	}
	if got := mustExec(t, l, RoleRouter, "iptables", "-t", "nat", "-S", "POSTROUTING"); !strings.Contains(got, "-o wan+ -j MASQUERADE") {
		t.Fatalf("router NAT missing: %q", got)
	}
	if got := mustExec(t, l, ISPRole(2), "cat", "/proc/sys/net/ipv4/conf/all/rp_filter"); strings.TrimSpace(got) != "0" {
		t.Fatalf("isp2 rp_filter = %q", got)
	}
	// Without a default route the router cannot reach the internet: the
	// lab adds no routes beyond the connected ones.
	if _, err := l.Ping(RoleRouter, Target1, 300*time.Millisecond); err == nil {
		t.Fatal("router reached the internet without a default route")
	}

	mustExec(t, l, RoleRouter, "ip", "route", "add", "default", "via", ISPGateway.String(), "dev", WANName(1))
	rtt, err := l.Ping(RoleClient, Target1, time.Second)
	if err != nil {
		t.Fatalf("client -> %s: %v", Target1, err)
	}
	t.Logf("client -> %s rtt %v", Target1, rtt)

	f, err := l.StartFlow(RoleClient, 1000)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("baseline", func(t *testing.T) {
		a, b := window(300 * time.Millisecond)
		time.Sleep(settle)
		r := f.Snapshot()
		sent, got := r.SentBetween(a, b)
		by := r.ByISP(a, b)
		t.Logf("sent %d received %d by ISP %v", sent, got, by)
		if sent < 100 || got < sent*95/100 {
			t.Fatalf("sent %d received %d", sent, got)
		}
		if by[1] == 0 || by[2] != 0 || by[0] != 0 {
			t.Fatalf("want everything via ISP 1, got %v", by)
		}
	})

	t.Run("carrier", func(t *testing.T) {
		if err := l.CarrierDown(1); err != nil {
			t.Fatal(err)
		}
		link, err := l.WaitLink(RoleRouter, WANName(1), 2*time.Second, NoCarrier)
		if err != nil {
			t.Fatal(err)
		}
		if link.Attrs().Flags&net.FlagUp == 0 {
			t.Fatalf("wan0 should stay administratively up, flags %v", link.Attrs().Flags)
		}
		if !strings.Contains(mustExec(t, l, RoleRouter, "ip", "link", "show", "wan0"), "NO-CARRIER") {
			t.Fatal("ip link does not show NO-CARRIER on wan0")
		}
		a, b := window(300 * time.Millisecond)
		time.Sleep(settle)
		if by := f.Snapshot().ByISP(a.Add(20*time.Millisecond), b); sum(by) != 0 {
			t.Fatalf("packets delivered without carrier: %v", by)
		}
		if err := l.CarrierUp(1); err != nil {
			t.Fatal(err)
		}
		if _, err := l.WaitLink(RoleRouter, WANName(1), 2*time.Second, HasCarrier); err != nil {
			t.Fatal(err)
		}
		up := time.Now()
		p := waitForISP(t, f, 1, up, 3*time.Second)
		t.Logf("flow back %v after carrier up", p.At.Sub(up).Round(time.Millisecond))
	})

	t.Run("blackhole", func(t *testing.T) {
		if err := l.Blackhole(1); err != nil {
			t.Fatal(err)
		}
		a, b := window(300 * time.Millisecond)
		time.Sleep(settle)
		if by := f.Snapshot().ByISP(a.Add(20*time.Millisecond), b); sum(by) != 0 {
			t.Fatalf("blackholed ISP delivered %v", by)
		}
		if _, err := l.WaitLink(RoleRouter, WANName(1), 0, HasCarrier); err != nil {
			t.Fatalf("blackhole must keep the link up: %v", err)
		}
		// The ISP's own address still answers (link and ARP up)...
		if _, err := l.Ping(RoleRouter, ISPGateway, time.Second); err != nil {
			t.Fatalf("gateway unreachable during blackhole: %v", err)
		}
		// ...but nothing gets through it.
		if _, err := l.Ping(RoleClient, Target1, 300*time.Millisecond); err == nil {
			t.Fatal("ping crossed a blackholed ISP")
		}
		if err := l.Restore(1); err != nil {
			t.Fatal(err)
		}
		waitForISP(t, f, 1, time.Now(), 2*time.Second)
	})

	t.Run("loss", func(t *testing.T) {
		if err := l.Loss(1, 0.3); err != nil {
			t.Fatal(err)
		}
		a, b := window(time.Second)
		time.Sleep(settle)
		sent, got := f.Snapshot().SentBetween(a, b)
		frac := float64(got) / float64(sent)
		t.Logf("Loss(0.3): sent %d received %d (%.3f)", sent, got, frac)
		// Binomial sd at n=1000 is 0.015: the band is ~6 sd wide each way.
		if sent < 500 || frac < 0.6 || frac > 0.8 {
			t.Fatalf("delivered fraction %.3f of %d, want about 0.7", frac, sent)
		}
		if err := l.Restore(1); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("oneway", func(t *testing.T) {
		// Downstream loss: the one-way UDP flow is unaffected, pings are not.
		if err := l.OneWayLoss(1, Downstream, 1); err != nil {
			t.Fatal(err)
		}
		a, b := window(200 * time.Millisecond)
		time.Sleep(settle)
		sent, got := f.Snapshot().SentBetween(a, b)
		if sent == 0 || got < sent*95/100 {
			t.Fatalf("downstream loss hit the upstream flow: sent %d received %d", sent, got)
		}
		if _, err := l.Ping(RoleClient, Target1, 300*time.Millisecond); err == nil {
			t.Fatal("ping answered through 100% downstream loss")
		}
		// Upstream loss: the flow stops.
		if err := l.OneWayLoss(1, Upstream, 1); err != nil {
			t.Fatal(err)
		}
		if err := l.OneWayLoss(1, Downstream, 0); err != nil {
			t.Fatal(err)
		}
		a, b = window(200 * time.Millisecond)
		time.Sleep(settle)
		if sent, got := f.Snapshot().SentBetween(a, b); sent == 0 || got != 0 {
			t.Fatalf("upstream loss 1: sent %d received %d", sent, got)
		}
		if err := l.Restore(1); err != nil {
			t.Fatal(err)
		}
		if got := mustExec(t, l, ISPRole(1), "iptables", "-S", faultChain); strings.TrimSpace(got) != "-N "+faultChain {
			t.Fatalf("Restore left rules: %q", got)
		}
	})

	t.Run("restored", func(t *testing.T) {
		a, b := window(300 * time.Millisecond)
		time.Sleep(settle)
		sent, got := f.Snapshot().SentBetween(a, b)
		if sent < 100 || got < sent*95/100 {
			t.Fatalf("after Restore: sent %d received %d", sent, got)
		}
	})

	rep := f.Stop()
	t.Logf("client flow: sent %d (errors %d) received %d, longest gap %v",
		rep.Sent, rep.SendErrors, rep.Received, rep.LongestGap(rep.Start, rep.End).Duration().Round(time.Millisecond))

	t.Run("router flow follows route changes", func(t *testing.T) {
		// An unconnected sender picks route and source per packet: moving
		// the default route moves the very next packets.
		rf, err := l.StartFlow(RoleRouter, 500)
		if err != nil {
			t.Fatal(err)
		}
		defer rf.Stop()
		a, b := window(200 * time.Millisecond)
		mustExec(t, l, RoleRouter, "ip", "route", "replace", "default", "via", ISPGateway.String(), "dev", WANName(2))
		sw := time.Now()
		c, d := window(200 * time.Millisecond)
		r := rf.Stop()
		before, after := r.ByISP(a, b), r.ByISP(c, d)
		t.Logf("before switch %v, after %v", before, after)
		if before[1] == 0 || before[2] != 0 || after[2] == 0 || after[1] != 0 {
			t.Fatalf("route switch not followed: before %v after %v", before, after)
		}
		// 500 pps is a packet every 2ms; 100ms leaves room for a busy
		// machine without hiding a real stall at the switch.
		if g := r.LongestGap(sw.Add(-100*time.Millisecond), sw.Add(100*time.Millisecond)); g.Duration() > 100*time.Millisecond {
			t.Fatalf("gap of %v at the route switch", g.Duration())
		}
	})

	t.Run("close kills commands", func(t *testing.T) {
		cmd := l.Command(RoleRouter, "sleep", "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("sleep ended with %v, want SIGKILL", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close left the command running")
		}
		if left := namespacesWithPrefix(t, l.Prefix()); len(left) > 0 {
			t.Fatalf("namespaces left: %v", left)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := l.Exec(RoleRouter, "true"); err == nil {
			t.Fatal("Exec after Close succeeded")
		}
	})
}

func sum(c []int) int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// TestManyISPs builds an 8-ISP lab (for benchmark-sized topologies) and
// checks that every ISP carries traffic, moving the router's default route
// across all WANs under one running flow.
func TestManyISPs(t *testing.T) {
	const n = 8
	l := newLab(t, Options{ISPs: n, RouterAddrs: true})
	f, err := l.StartFlow(RoleRouter, 500)
	if err != nil {
		t.Fatal(err)
	}
	type win struct{ a, b time.Time }
	var wins []win
	for i := 1; i <= n; i++ {
		mustExec(t, l, RoleRouter, "ip", "route", "replace", "default", "via", ISPGateway.String(), "dev", WANName(i))
		time.Sleep(20 * time.Millisecond) // ARP for the new WAN's gateway
		a, b := window(100 * time.Millisecond)
		wins = append(wins, win{a, b})
	}
	time.Sleep(settle)
	r := f.Stop()
	for i, w := range wins {
		by := r.ByISP(w.a, w.b)
		if by[i+1] == 0 || sum(by) != by[i+1] {
			t.Errorf("default via %s: received by ISP %v, want only ISP %d", WANName(i+1), by, i+1)
		}
	}
}

// TestBuildTeardownTiming measures creation and teardown of 8- and 32-ISP
// labs (32 is the largest the benchmarks use) and checks that the last ISP
// of each carries traffic.
func TestBuildTeardownTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	requireRoot(t)
	for _, n := range []int{8, 32} {
		start := time.Now()
		l, err := New(Options{ISPs: n, RouterAddrs: true, RouterNAT: true})
		if err != nil {
			t.Fatal(err)
		}
		built := time.Since(start)
		if _, err := l.Exec(RoleRouter, "ip", "route", "add", "default", "via", ISPGateway.String(), "dev", WANName(n)); err != nil {
			l.Close()
			t.Fatal(err)
		}
		if _, err := l.Ping(RoleClient, Target2, time.Second); err != nil {
			l.Close()
			t.Fatalf("%d ISPs: client via ISP %d: %v", n, n, err)
		}
		start = time.Now()
		err = l.Close()
		closed := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		if left := namespacesWithPrefix(t, l.Prefix()); len(left) > 0 {
			t.Fatalf("namespaces left: %v", left)
		}
		t.Logf("%d ISPs: built in %v, closed in %v", n, built.Round(time.Millisecond), closed.Round(time.Millisecond))
	}
}

func TestWANWithoutRouterAddrs(t *testing.T) {
	l := newLab(t, Options{ISPs: 1})
	h, err := l.Handle(RoleRouter)
	if err != nil {
		t.Fatal(err)
	}
	link, err := h.LinkByName(WANName(1))
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 0 {
		t.Fatalf("wan0 should be unaddressed, has %v", addrs)
	}
	if !HasCarrier(link) {
		t.Fatalf("wan0 should be up with carrier: flags %v oper %v", link.Attrs().Flags, link.Attrs().OperState)
	}
	if got := mustExec(t, l, RoleRouter, "iptables", "-t", "nat", "-S", "POSTROUTING"); strings.Contains(got, "MASQUERADE") {
		t.Fatalf("RouterNAT off but NAT present: %q", got)
	}
	// The daemon's static addressing would do this: then the ISP answers.
	if err := h.AddrAdd(link, nlAddr(RouterWANAddr(1))); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Ping(RoleRouter, ISPGateway, time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestSweep(t *testing.T) {
	requireRoot(t)
	// A lab of a live process (ours) survives Sweep.
	l := newLab(t, Options{ISPs: 1})
	// A dead creator: a finished child's pid with a made-up start time.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	prefix, pidfile, err := reservePrefix("")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pidfile, []byte(fmt.Sprintf("%d 1\n", cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	dead := prefix + "-rtr"
	// A random-prefix namespace with no pid file at all.
	p, pf, err := reservePrefix("")
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(pf)
	orphan := p + "-inet"
	for _, n := range []string{dead, orphan} {
		if out, err := exec.Command("ip", "netns", "add", n).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v %s", n, err, out)
		}
	}
	t.Cleanup(func() { _ = deleteNamespaces([]string{dead, orphan}); os.Remove(pidfile) })
	// A process left running in the dead lab must be killed, or the
	// namespace would outlive its name.
	sleeper := exec.Command("ip", "netns", "exec", dead, "sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sleeper.Wait() }()
	time.Sleep(50 * time.Millisecond) // let ip(8) exec into sleep

	swept, err := Sweep()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(swept, " ")
	if !strings.Contains(got, dead) || !strings.Contains(got, orphan) {
		t.Fatalf("Sweep removed %v, want %s and %s", swept, dead, orphan)
	}
	if strings.Contains(got, l.Prefix()) {
		t.Fatalf("Sweep removed the live lab: %v", swept)
	}
	if _, err := os.Stat(pidfile); err == nil {
		t.Fatal("dead lab's pid file survived")
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("process in the dead lab survived Sweep")
	}
	if _, err := os.Stat(filepath.Join(netnsDir, l.NS(RoleRouter))); err != nil {
		t.Fatalf("live lab damaged: %v", err)
	}
}

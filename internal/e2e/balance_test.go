package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ti-mo/conntrack"
	"github.com/vishvananda/netlink"

	"github.com/wanreact/wanreact/internal/lab"
)

// balanceConfig: two WANs sharing priority 1 at weights 2 and 1, the
// daemon's own MASQUERADE on both and no NAT rule of the lab's.
func balanceConfig() labConfig {
	return labConfig{
		SamePrio:    true,
		NoRouterNAT: true,
		WANExtra:    map[int]string{1: "    weight: 2\n    nat: true\n", 2: "    weight: 1\n    nat: true\n"},
	}
}

// waitBothActive waits until both WANs are up and share new connections.
func (e *env) waitBothActive(timeout time.Duration) {
	e.t.Helper()
	e.waitFor("isp1 and isp2 up and active", timeout, func() (bool, string) {
		st, err := e.status()
		if err != nil {
			return false, err.Error()
		}
		ok := st["isp1"].State == "up" && st["isp1"].Active && st["isp2"].State == "up" && st["isp2"].Active
		return ok, fmt.Sprint(st)
	})
}

// waitFlushed waits for the event log's conntrack action of wan after since:
// the daemon has re-routed and deleted the WAN's connections.
func (e *env) waitFlushed(wan string, since time.Time) {
	e.t.Helper()
	e.waitFor("conntrack flush of "+wan, 5*time.Second, func() (bool, string) {
		f, err := os.Open(e.evlog)
		if err != nil {
			return false, err.Error()
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			var l struct {
				Time         time.Time
				Source, Type string
				WAN          string
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Source == "action" && l.Type == "conntrack" && l.WAN == wan && !l.Time.Before(since) {
				return true, ""
			}
		}
		return false, "not yet"
	})
}

var countersRE = regexp.MustCompile(`\[\d+:\d+\]`)

// iptablesSave is the router's whole ruleset without comments and counters.
func (e *env) iptablesSave() string {
	e.t.Helper()
	out, err := e.lab.Exec(lab.RoleRouter, "iptables-save")
	if err != nil {
		e.t.Fatalf("iptables-save: %v", err)
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			keep = append(keep, countersRE.ReplaceAllString(l, "[0:0]"))
		}
	}
	return strings.Join(keep, "\n")
}

// conntrackPackets maps the source port of every router conntrack entry
// towards UDP port dport to the packets the entry counted in the original
// direction (needs nf_conntrack_acct, see enableConntrackAcct): an entry
// deleted and re-created starts counting again. (Entry ids are no proof:
// a re-created entry with the same tuple may reuse the old one's memory,
// and with it the id.)
func (e *env) conntrackPackets(dport int) map[uint16]uint64 {
	e.t.Helper()
	var flows []conntrack.Flow
	err := e.lab.Do(lab.RoleRouter, func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		flows, err = c.Dump(nil)
		return err
	})
	if err != nil {
		e.t.Fatalf("conntrack dump: %v", err)
	}
	out := map[uint16]uint64{}
	for _, f := range flows {
		if f.TupleOrig.Proto.Protocol == syscall.IPPROTO_UDP && f.TupleOrig.Proto.DestinationPort == uint16(dport) {
			out[f.TupleOrig.Proto.SourcePort] = f.CountersOrig.Packets
		}
	}
	return out
}

// enableConntrackAcct turns on per-entry packet counters in the router's
// namespace (a per-namespace sysctl) for conntrackPackets.
func (e *env) enableConntrackAcct() {
	e.t.Helper()
	if out, err := e.lab.Exec(lab.RoleRouter, "sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1"); err != nil {
		e.t.Fatalf("nf_conntrack_acct: %v %s", err, out)
	}
}

func (e *env) openConns(from string, o lab.ConnOptions) *lab.Conns {
	e.t.Helper()
	c, err := e.lab.OpenConns(from, o)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.Close)
	return c
}

// round sends one datagram per connection and waits for all of them.
func round(t *testing.T, c *lab.Conns, what string) int {
	t.Helper()
	r := c.Round()
	if !c.Wait(r, 3*time.Second) {
		t.Errorf("%s: not every datagram arrived: split %v (index 0 = lost)", what, c.Split(r, 2))
	}
	return r
}

// checkWeighted asserts a 2:1 split within ±10 % of each WAN's share.
func checkWeighted(t *testing.T, what string, split []int) {
	t.Helper()
	n := split[1] + split[2] + split[0]
	lo1, hi1 := int(0.9*float64(n)*2/3), int(1.1*float64(n)*2/3+0.999)
	lo2, hi2 := int(0.9*float64(n)/3), int(1.1*float64(n)/3+0.999)
	t.Logf("%s: isp1=%d isp2=%d lost=%d (2:1 of %d is %d:%d)", what, split[1], split[2], split[0], n, 2*n/3, n/3)
	if split[0] != 0 || split[1] < lo1 || split[1] > hi1 || split[2] < lo2 || split[2] > hi2 {
		t.Errorf("%s: split isp1=%d isp2=%d lost=%d, want isp1 in [%d,%d] and isp2 in [%d,%d]", what, split[1], split[2], split[0], lo1, hi1, lo2, hi2)
	}
}

// TestBalance is the acceptance test of per-connection balancing: the 2:1
// split, stickiness, failover that moves only the failed WAN's connections,
// failback that leaves existing connections alone, and a firewall that does
// not change through any of it.
func TestBalance(t *testing.T) {
	e := newEnv(t, balanceConfig())
	e.enableConntrackAcct()
	e.start()
	e.waitBothActive(15 * time.Second)
	before := e.iptablesSave()
	for _, want := range []string{"-A WANREACT_NAT -o wan0 -j MASQUERADE", "-A PREROUTING -j WANREACT_PRE"} {
		if !strings.Contains(before, want) {
			t.Fatalf("firewall lacks %q:\n%s", want, before)
		}
	}

	c := e.openConns(lab.RoleClient, lab.ConnOptions{N: 600})
	r0 := round(t, c, "600 new connections")
	checkWeighted(t, "600 new connections", c.Split(r0, 2))
	r1 := round(t, c, "second datagram of each")
	var on1, on2 []int
	for i, g := range c.ISPs() {
		if g[r0] != g[r1] {
			t.Errorf("connection %d moved from isp%d to isp%d", i, g[r0], g[r1])
		}
		switch g[r0] {
		case 1:
			on1 = append(on1, i)
		case 2:
			on2 = append(on2, i)
		}
	}

	// Failover: isp1 loses its carrier.
	downAt := time.Now()
	if err := e.lab.CarrierDown(1); err != nil {
		t.Fatal(err)
	}
	e.waitFor("isp1 down", 5*time.Second, func() (bool, string) {
		st, err := e.status()
		return err == nil && st["isp1"].State == "down" && !st["isp1"].Active, fmt.Sprint(st, err)
	})
	e.waitFlushed("isp1", downAt)
	r2 := round(t, c, "after isp1 failed")
	if s := c.Split(r2, 2); s[2] != 600 {
		t.Errorf("after isp1 failed: split %v, want every connection (the %d of isp1 resumed) on isp2", s, len(on1))
	}
	// Three datagrams so far: an entry that survived counted all three,
	// one re-created after the flush only the last.
	pkts := e.conntrackPackets(c.SinkPort())
	kept, renewed := 0, 0
	for _, i := range on2 {
		if pkts[uint16(c.LocalPort(i))] == 3 {
			kept++
		}
	}
	for _, i := range on1 {
		if pkts[uint16(c.LocalPort(i))] == 1 {
			renewed++
		}
	}
	t.Logf("conntrack: %d/%d entries of isp2 connections untouched, %d/%d of isp1 re-created", kept, len(on2), renewed, len(on1))
	if kept != len(on2) || renewed != len(on1) {
		t.Errorf("the flush must delete exactly isp1's entries: kept %d/%d of isp2, re-created %d/%d of isp1", kept, len(on2), renewed, len(on1))
	}
	during := e.openConns(lab.RoleClient, lab.ConnOptions{N: 150})
	if s := during.Split(round(t, during, "new connections during the outage"), 2); s[2] != 150 {
		t.Errorf("new connections during the outage: %v, want all on isp2", s)
	}

	// Failback: existing connections stay, new ones split 2:1 again.
	if err := e.lab.CarrierUp(1); err != nil {
		t.Fatal(err)
	}
	e.waitBothActive(10 * time.Second)
	if s := c.Split(round(t, c, "after failback"), 2); s[2] != 600 {
		t.Errorf("after failback existing connections moved: %v, want all still on isp2", s)
	}
	fresh := e.openConns(lab.RoleClient, lab.ConnOptions{N: 600})
	checkWeighted(t, "600 new connections after failback", fresh.Split(round(t, fresh, "after failback"), 2))

	// Continuous flows (200 packets/s each, one conntrack entry each)
	// keep sending through the next failover: a packet that slipped in
	// between the conntrack flush and the route change would pin its flow
	// to the dead WAN again. Flows are started until one lands on isp2
	// (each is a new connection, so they go round the slots).
	var flows []*lab.Flow
	wasOn2 := map[int]bool{}
	for len(wasOn2) == 0 && len(flows) < 30 {
		f, err := e.lab.StartFlow(lab.RoleClient, 200)
		if err != nil {
			t.Fatal(err)
		}
		flows = append(flows, f)
		deadline := time.Now().Add(time.Second)
		for f.Snapshot().LastISP() == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if f.Snapshot().LastISP() == 2 {
			wasOn2[len(flows)-1] = true
		}
	}
	if len(wasOn2) == 0 {
		t.Fatalf("none of %d flows landed on isp2", len(flows))
	}
	time.Sleep(300 * time.Millisecond)

	// Second failover, of isp2 this time and silent: its link stays up
	// (the WAN keeps its table), only probes notice.
	downAt = time.Now()
	if err := e.lab.Blackhole(2); err != nil {
		t.Fatal(err)
	}
	e.waitFor("isp2 down", 5*time.Second, func() (bool, string) {
		st, err := e.status()
		return err == nil && st["isp2"].State == "down", fmt.Sprint(st, err)
	})
	e.waitFlushed("isp2", downAt)
	time.Sleep(500 * time.Millisecond)
	for i, f := range flows {
		r := f.Stop()
		gap := r.LongestGap(downAt.Add(-100*time.Millisecond), r.End)
		if r.LastISP() != 1 {
			t.Errorf("flow %d stuck after isp2 failed: last packet via isp%d, longest gap %v", i, r.LastISP(), gap.Duration().Round(time.Millisecond))
		}
		if wasOn2[i] {
			t.Logf("flow %d moved from isp2 to isp%d; longest gap across the failover %v", i, r.LastISP(), gap.Duration().Round(time.Millisecond))
		}
	}
	if s := fresh.Split(round(t, fresh, "after isp2 failed"), 2); s[1] != 600 {
		t.Errorf("after isp2 failed: %v, want all on isp1", s)
	}
	if after := e.iptablesSave(); after != before {
		t.Errorf("iptables-save changed across two failovers and a failback:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestBalanceRouterAndPortForwards: the router's own connections are spread
// and sticky, a socket bound to a WAN address keeps that WAN, and replies to
// connections opened from the internet leave through the WAN they came in by.
func TestBalanceRouterAndPortForwards(t *testing.T) {
	e := newEnv(t, balanceConfig())
	inet, err := e.lab.Handle(lab.RoleInet)
	if err != nil {
		t.Fatal(err)
	}
	lo, err := inet.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	// Extra internet hosts: the kernel's multipath hash is per address
	// pair by default, so the router's spread shows across destinations.
	var hosts []netip.Addr
	for k := range 32 {
		a := netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + k)})
		if err := inet.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(32, 32)}}); err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, a)
	}
	e.start()
	e.waitBothActive(15 * time.Second)

	t.Run("router-originated", func(t *testing.T) {
		c := e.openConns(lab.RoleRouter, lab.ConnOptions{N: 64, Dsts: hosts})
		r0 := round(t, c, "router connections")
		r1 := round(t, c, "router connections, again")
		for i, g := range c.ISPs() {
			if g[r0] != g[r1] {
				t.Errorf("router connection %d moved from isp%d to isp%d", i, g[r0], g[r1])
			}
		}
		s := c.Split(r0, 2)
		t.Logf("router connections to %d hosts: isp1=%d isp2=%d lost=%d", len(hosts), s[1], s[2], s[0])
		if s[1] == 0 || s[2] == 0 || s[0] != 0 {
			t.Errorf("router connections not spread over both WANs: %v", s)
		}

		bound := e.openConns(lab.RoleRouter, lab.ConnOptions{N: 30, Bind: lab.RouterWANAddr(2).Addr()})
		if s := bound.Split(round(t, bound, "bound to isp2's address"), 2); s[2] != 30 {
			t.Errorf("sockets bound to isp2's address left through %v, want all via isp2", s)
		}
	})

	t.Run("port forwards", func(t *testing.T) {
		const port = 7000
		// Each ISP forwards port 7000 to the router, the router (a
		// user's DNAT rule next to our chains) to the LAN client.
		for i := 1; i <= 2; i++ {
			if out, err := e.lab.Exec(lab.ISPRole(i), "iptables", "-t", "nat", "-A", "PREROUTING", "-i", lab.ISPUpIf, "-p", "udp",
				"--dport", fmt.Sprint(port), "-j", "DNAT", "--to-destination", lab.RouterWANAddr(i).Addr().String()); err != nil {
				t.Fatalf("%v %s", err, out)
			}
			if out, err := e.lab.Exec(lab.RoleRouter, "iptables", "-t", "nat", "-A", "PREROUTING", "-i", lab.WANName(i), "-p", "udp",
				"--dport", fmt.Sprint(port), "-j", "DNAT", "--to-destination", lab.ClientAddr.String()); err != nil {
				t.Fatalf("%v %s", err, out)
			}
		}
		var echo *net.UDPConn
		if err := e.lab.Do(lab.RoleClient, func() error {
			var err error
			echo, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer echo.Close()
		go func() {
			buf := make([]byte, 64)
			for {
				n, from, err := echo.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				_, _ = echo.WriteToUDPAddrPort(buf[:n], from)
			}
		}()
		// From many internet hosts (so that a reply routed by the hash
		// would pick both WANs) through each ISP.
		wrong, lost := 0, 0
		for i := 1; i <= 2; i++ {
			via := lab.ISPUpstreamAddr(i)
			for _, h := range hosts {
				err := e.lab.Do(lab.RoleInet, func() error {
					s, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(h.AsSlice())})
					if err != nil {
						return err
					}
					defer s.Close()
					if _, err := s.WriteToUDP([]byte("ping"), &net.UDPAddr{IP: net.IP(via.AsSlice()), Port: port}); err != nil {
						return err
					}
					_ = s.SetReadDeadline(time.Now().Add(time.Second))
					buf := make([]byte, 64)
					_, from, err := s.ReadFromUDPAddrPort(buf)
					if err != nil {
						lost++
						return nil
					}
					if from.Addr() != via {
						wrong++
						t.Logf("reply to %s via isp%d came from %s", h, i, from)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
		}
		if wrong+lost > 0 {
			t.Errorf("port forwards: %d of %d replies left through another WAN, %d lost", wrong, 2*len(hosts), lost)
		}
	})
}

// TestBalanceFirewallLifecycle: the chains are installed once, repaired
// when flushed, survive stop and restart without duplicates, and cleanup
// removes them (and the slot routing) while the user's own rules stay.
func TestBalanceFirewallLifecycle(t *testing.T) {
	e := newEnv(t, labConfig{}) // lan0, default slots, the lab's MASQUERADE as the user's
	userRules := "*mangle\n:USERMARK - [0:0]\n-A PREROUTING -i lan0 -j USERMARK\n-A USERMARK -p tcp --dport 22 -j MARK --set-xmark 0x1/0x1\nCOMMIT\n"
	cmd := e.lab.Command(lab.RoleRouter, "iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(userRules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("user rules: %v %s", err, out)
	}
	users := func(save string) []string {
		var out []string
		for _, l := range strings.Split(save, "\n") {
			if !strings.Contains(l, "WANREACT_") {
				out = append(out, l)
			}
		}
		return out
	}
	userBefore := users(e.iptablesSave())

	e.start()
	e.waitActive("isp1", 10*time.Second)
	installed := e.iptablesSave()
	for _, jump := range []string{"-A PREROUTING -j WANREACT_PRE", "-A OUTPUT -j WANREACT_OUT", "-A POSTROUTING -j WANREACT_POST"} {
		if n := strings.Count(installed, jump+"\n"); n != 1 {
			t.Errorf("%d copies of %q", n, jump)
		}
	}
	if strings.Contains(installed, "WANREACT_NAT") {
		t.Error("nat chain installed although no WAN has nat: true")
	}
	if got := users(installed); !slices.Equal(got, userBefore) {
		t.Errorf("user rules changed by the start:\n%s", strings.Join(got, "\n"))
	}

	for _, c := range [][]string{{"iptables", "-t", "mangle", "-F", "WANREACT_PRE"}, {"iptables", "-t", "mangle", "-D", "OUTPUT", "-j", "WANREACT_OUT"}} {
		if out, err := e.lab.Exec(lab.RoleRouter, c...); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	broken := time.Now()
	e.waitFor("firewall repaired", 8*time.Second, func() (bool, string) {
		return e.iptablesSave() == installed, "not yet"
	})
	t.Logf("flushed chain and deleted jump repaired in %v", time.Since(broken).Round(time.Millisecond))

	// A reload that turns nat on adds our nat chain, one that turns it
	// off again restores exactly the previous ruleset.
	e.writeConfig(labConfig{WANExtra: map[int]string{1: "    nat: true\n"}})
	_ = e.daemon.Process.Signal(syscall.SIGHUP)
	e.waitFor("nat chain after reload", 3*time.Second, func() (bool, string) {
		return strings.Contains(e.iptablesSave(), "-A WANREACT_NAT -o wan0 -j MASQUERADE"), "not yet"
	})
	e.writeConfig(labConfig{})
	_ = e.daemon.Process.Signal(syscall.SIGHUP)
	e.waitFor("nat chain gone after reload", 3*time.Second, func() (bool, string) {
		return e.iptablesSave() == installed, "not yet"
	})

	e.stop(syscall.SIGTERM)
	if got := e.iptablesSave(); got != installed {
		t.Errorf("stop changed the firewall:\n%s", got)
	}
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		e.start()
		e.waitActive("isp1", 10*time.Second)
		if got := e.iptablesSave(); got != installed {
			t.Errorf("restart changed the firewall:\n%s\nwas:\n%s", got, installed)
		}
		e.stop(sig)
	}

	if out, code := e.cli("cleanup", "-c", e.cfgPath); code != 0 {
		t.Fatalf("cleanup exit %d: %s", code, out)
	}
	after := e.iptablesSave()
	if strings.Contains(after, "WANREACT_") {
		t.Errorf("chains left after cleanup:\n%s", after)
	}
	if got := users(after); !slices.Equal(got, userBefore) {
		t.Errorf("user rules changed by cleanup:\n%s\nwere:\n%s", strings.Join(got, "\n"), strings.Join(userBefore, "\n"))
	}
	if got := e.ourRules(); len(got) != 0 {
		t.Errorf("rules left after cleanup: %v", got)
	}
	for _, table := range []int{1000, 1059} {
		if got := e.routes(table); len(got) != 0 {
			t.Errorf("slot table %d left after cleanup: %v", table, got)
		}
	}
}

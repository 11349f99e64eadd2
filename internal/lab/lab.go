// Package lab builds a throw-away test network out of Linux network
// namespaces and injects faults into it. The daemon's integration tests,
// `make demo` and the benchmarks use it; it is test tooling, not part of the
// daemon, so it freely shells out to ip(8) and iptables(8).
//
// Topology for N ISPs (namespace names are "<prefix>-<role>"):
//
//	client (eth0 198.18.100.2/24, default via .1)
//	   |
//	rtr    lan0 198.18.100.1/24; wan0..wan{N-1}; ip_forward=1   <- the daemon runs here
//	   | wan{i-1}                      (optionally 203.0.113.(1+i)/24, see Options)
//	isp<i> cust0 203.0.113.1/24 (the same in every ISP: overlapping subnets)
//	   |   up0 198.18.<i>.2/30, default via 198.18.<i>.1, MASQUERADE out of up0
//	inet   isp<i> 198.18.<i>.1/30; lo carries 198.51.100.1, .2 (probe targets)
//	       and 198.51.100.10 (flow sink)
//
// Because every ISP masquerades towards inet, the inet side sees source
// 198.18.<i>.2 and can tell which ISP carried a packet (see ISPOf).
//
// IPv6 is disabled in every lab namespace: the daemon is IPv4-only and
// link-local addresses, DAD and router solicitations would only add noise to
// its netlink event stream.
//
// Requirements: root (CAP_NET_ADMIN, CAP_SYS_ADMIN for setns), iproute2 and
// iptables (the nf_tables flavour is fine).
package lab

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// MaxISPs bounds Options.ISPs: ISP i uses 198.18.<i>.0/30, and i must stay
// clear of the LAN's 198.18.100.0/24.
const MaxISPs = 64

// Roles of the fixed namespaces; ISP namespaces are ISPRole(i).
const (
	RoleInet   = "inet"
	RoleRouter = "rtr"
	RoleClient = "client"
)

// Interface names. The router's WAN interfaces are WANName(i); the inet end
// of ISP i's upstream link is "isp<i>".
const (
	RouterLANIf = "lan0"
	ClientIf    = "eth0"
	ISPUpIf     = "up0"   // ISP -> inet
	ISPCustIf   = "cust0" // ISP -> router (carries 203.0.113.1/24)
)

// Well-known addresses of the lab.
var (
	Target1    = netip.MustParseAddr("198.51.100.1")
	Target2    = netip.MustParseAddr("198.51.100.2")
	SinkAddr   = netip.MustParseAddr("198.51.100.10")
	ISPGateway = netip.MustParseAddr("203.0.113.1")
	RouterLAN  = netip.MustParseAddr("198.18.100.1")
	ClientAddr = netip.MustParseAddr("198.18.100.2")
)

// ISPRole is the role name of ISP i (1-based): "isp1".."ispN".
func ISPRole(i int) string { return "isp" + strconv.Itoa(i) }

// WANName is the router interface connected to ISP i (1-based): ISP 1 is
// wan0, so that interface numbering matches the daemon's config examples.
func WANName(i int) string { return "wan" + strconv.Itoa(i-1) }

// RouterWANAddr is the address the lab gives WANName(i) when
// Options.RouterAddrs is set: 203.0.113.(1+i)/24, i.e. wan0 = .2.
func RouterWANAddr(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + i)}), 24)
}

// ISPUpstreamAddr is ISP i's address towards inet, 198.18.<i>.2: the source
// address every packet carried by ISP i has when it reaches inet.
func ISPUpstreamAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, byte(i), 2})
}

// ISPOf returns the ISP whose masquerading address a is (198.18.<i>.2), or 0
// when a is not one.
func ISPOf(a netip.Addr) int {
	a = a.Unmap()
	if !a.Is4() {
		return 0
	}
	b := a.As4()
	if b[0] != 198 || b[1] != 18 || b[3] != 2 || b[2] < 1 || int(b[2]) > MaxISPs {
		return 0
	}
	return int(b[2])
}

// Options selects the topology.
type Options struct {
	// ISPs is the number of ISPs, 1..MaxISPs; 0 means 2.
	ISPs int
	// RouterAddrs makes the lab address the router's WANs itself
	// (RouterWANAddr, connected routes only), emulating "external"
	// addressing. When false the WANs stay unaddressed for the daemon's
	// static or DHCP addressing to configure.
	RouterAddrs bool
	// RouterNAT installs the "user's firewall" in rtr:
	// iptables -t nat -A POSTROUTING -o wan+ -j MASQUERADE.
	RouterNAT bool
	// Prefix names the namespaces ("<Prefix>-rtr", ...); [a-z0-9]{1,16}.
	// Empty picks a random unused "wrl" + 4 hex digits, which is what tests
	// should use so that parallel runs never collide.
	Prefix string
}

// Lab is a built topology. Its methods are safe for concurrent use.
type Lab struct {
	prefix string
	n      int
	opts   Options

	mu      sync.Mutex
	closed  bool
	ns      map[string]netns.NsHandle // role -> open namespace fd
	nl      map[string]*netlink.Handle
	made    []string // namespace names created, in creation order
	cmds    []*exec.Cmd
	flows   []*Flow
	faultMu sync.Mutex
	faults  map[int]faultState // guarded by faultMu
	pidfile string
}

// New builds the topology. On error it tears down whatever it had built.
func New(opts Options) (*Lab, error) {
	if opts.ISPs == 0 {
		opts.ISPs = 2
	}
	if opts.ISPs < 1 || opts.ISPs > MaxISPs {
		return nil, fmt.Errorf("lab: ISPs = %d, want 1..%d", opts.ISPs, MaxISPs)
	}
	if opts.Prefix != "" && !validPrefix(opts.Prefix) {
		return nil, fmt.Errorf("lab: prefix %q: want [a-z0-9]{1,16}", opts.Prefix)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("lab: needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)")
	}
	for _, tool := range []string{"ip", "iptables-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("lab: %s not found (install iproute2 and iptables): %w", tool, err)
		}
	}
	l := &Lab{
		n:      opts.ISPs,
		opts:   opts,
		ns:     map[string]netns.NsHandle{},
		nl:     map[string]*netlink.Handle{},
		faults: map[int]faultState{},
	}
	// The pid file is written before any namespace exists, so that Sweep
	// never mistakes a lab being built for a leftover.
	prefix, pidfile, err := reservePrefix(opts.Prefix)
	if err != nil {
		return nil, err
	}
	l.prefix, l.pidfile = prefix, pidfile
	if err := l.build(); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("lab: teardown after failed build: %w", cerr))
		}
		return nil, err
	}
	return l, nil
}

// Prefix is the namespace-name prefix of this lab.
func (l *Lab) Prefix() string { return l.prefix }

// ISPs is the number of ISPs.
func (l *Lab) ISPs() int { return l.n }

// Roles lists every role: inet, rtr, client, isp1..ispN.
func (l *Lab) Roles() []string {
	r := []string{RoleInet, RoleRouter, RoleClient}
	for i := 1; i <= l.n; i++ {
		r = append(r, ISPRole(i))
	}
	return r
}

// NS returns the namespace name of role (for `ip netns exec`), or "" if the
// lab has no such role.
func (l *Lab) NS(role string) string {
	if !l.hasRole(role) {
		return ""
	}
	return l.prefix + "-" + role
}

func (l *Lab) hasRole(role string) bool {
	switch role {
	case RoleInet, RoleRouter, RoleClient:
		return true
	}
	i, ok := ispIndex(role)
	return ok && i <= l.n
}

func ispIndex(role string) (int, bool) {
	s, ok := strings.CutPrefix(role, "isp")
	if !ok || s == "" || s[0] == '0' {
		return 0, false
	}
	i, err := strconv.Atoi(s)
	return i, err == nil && i >= 1
}

// Handle returns a netlink handle bound to role's namespace, for tests that
// want to inspect or change kernel objects there. The lab owns it; do not
// Close it.
func (l *Lab) Handle(role string) (*netlink.Handle, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab: closed")
	}
	h, ok := l.nl[role]
	if !ok {
		return nil, fmt.Errorf("lab: no namespace for role %q", role)
	}
	return h, nil
}

func (l *Lab) nsHandle(role string) (netns.NsHandle, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return -1, errors.New("lab: closed")
	}
	h, ok := l.ns[role]
	if !ok {
		return -1, fmt.Errorf("lab: no namespace for role %q", role)
	}
	return h, nil
}

// Do runs fn on a locked OS thread inside role's namespace and returns its
// error. fn runs on a goroutine of its own (so it must not call t.FailNow),
// and goroutines it starts run outside the namespace. Sockets created inside
// fn stay in the namespace for their whole life.
func (l *Lab) Do(role string, fn func() error) error {
	target, err := l.nsHandle(role)
	if err != nil {
		return err
	}
	return doIn(target, fn)
}

func doIn(target netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: setns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime then destroys it when
			// this goroutine ends, instead of reusing a thread that sits
			// in the wrong namespace.
			errc <- errors.Join(ferr, fmt.Errorf("lab: restoring netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Exec runs a command in role's namespace (ip netns exec) and returns its
// combined output. A failure's error includes the output.
func (l *Lab) Exec(role string, args ...string) ([]byte, error) {
	name := l.NS(role)
	if name == "" {
		return nil, fmt.Errorf("lab: no namespace for role %q", role)
	}
	if len(args) == 0 {
		return nil, errors.New("lab: Exec without a command")
	}
	return run(nil, append([]string{"ip", "netns", "exec", name}, args...)...)
}

// Command prepares a long-running process in role's namespace. The caller
// starts and waits for it; Close SIGKILLs it if it is still running (stop
// it yourself first if it should shut down gracefully). For an unknown role
// the returned Cmd fails at Start.
func (l *Lab) Command(role string, name string, args ...string) *exec.Cmd {
	ns := l.NS(role)
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
	if ns == "" {
		cmd.Err = fmt.Errorf("lab: no namespace for role %q", role)
		return cmd
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		cmd.Err = errors.New("lab: closed")
		return cmd
	}
	l.cmds = append(l.cmds, cmd)
	return cmd
}

// Close stops the lab's flows, kills the processes it started and any other
// process left in its namespaces, and deletes the namespaces (which destroys
// every veth with them). It is idempotent: later calls return nil.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	flows, cmds, made := l.flows, l.cmds, l.made
	l.flows, l.cmds = nil, nil
	l.mu.Unlock()

	var errs []error
	for _, f := range flows {
		f.Stop()
	}
	for _, c := range cmds {
		if c.Process == nil {
			continue
		}
		// os.Process tracks the child by pidfd, so this cannot hit a
		// recycled pid after the caller's Wait.
		if err := c.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, fmt.Errorf("lab: kill %s: %w", c.Path, err))
		}
	}
	for _, h := range l.nl {
		h.Close()
	}
	for _, h := range l.ns {
		h.Close()
	}
	if err := deleteNamespaces(made); err != nil {
		errs = append(errs, err)
	}
	// The pid file goes last: a namespace without one is fair game for
	// Sweep, so it must not disappear while namespaces still exist.
	if l.pidfile != "" {
		if err := os.Remove(l.pidfile); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("lab: %w", err))
		}
	}
	return errors.Join(errs...)
}

// deleteNamespaces kills whatever still runs in the named namespaces and
// deletes them. Missing namespaces are not an error.
func deleteNamespaces(names []string) error {
	if len(names) == 0 {
		return nil
	}
	killNamespacePids(names)
	var batch bytes.Buffer
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, n)); err == nil {
			fmt.Fprintf(&batch, "netns delete %s\n", n)
		}
	}
	if batch.Len() == 0 {
		return nil
	}
	// -force keeps going after a failing line so one stuck namespace does
	// not leak the others.
	if _, err := run(batch.Bytes(), "ip", "-force", "-batch", "-"); err != nil {
		return fmt.Errorf("lab: deleting namespaces: %w", err)
	}
	return nil
}

// killNamespacePids SIGKILLs every process (other than ourselves) whose
// network namespace is one of names: a daemon or helper left behind would
// otherwise keep the namespace alive after its name is gone. Like
// `ip netns pids`, it compares /proc/PID/ns/net with the namespace files, but
// scans /proc once for all names.
func killNamespacePids(names []string) {
	type devIno struct{ dev, ino uint64 }
	want := map[devIno]bool{}
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(netnsDir, n), &st); err == nil {
			want[devIno{st.Dev, st.Ino}] = true
		}
	}
	if len(want) == 0 {
		return
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid <= 1 {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join("/proc", e.Name(), "ns/net"), &st); err != nil {
			continue
		}
		if want[devIno{st.Dev, st.Ino}] {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

const netnsDir = "/run/netns"

// run executes argv with optional stdin and returns combined output; the
// error carries the command line and its output.
func run(stdin []byte, argv ...string) ([]byte, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// build creates the namespaces, links, addresses, routes, sysctls and
// firewall rules.
func (l *Lab) build() error {
	roles := l.Roles()
	var batch bytes.Buffer
	for _, r := range roles {
		fmt.Fprintf(&batch, "netns add %s-%s\n", l.prefix, r)
	}
	// Record the names before running the batch: if it fails halfway,
	// Close still removes those that were created.
	for _, r := range roles {
		l.made = append(l.made, l.prefix+"-"+r)
	}
	if _, err := run(batch.Bytes(), "ip", "-batch", "-"); err != nil {
		return fmt.Errorf("lab: creating namespaces: %w", err)
	}
	for _, r := range roles {
		name := l.prefix + "-" + r
		h, err := netns.GetFromName(name)
		if err != nil {
			return fmt.Errorf("lab: open netns %s: %w", name, err)
		}
		l.ns[r] = h
		nh, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("lab: netlink in %s: %w", name, err)
		}
		l.nl[r] = nh
	}

	// Sysctls first, so that interfaces created afterwards inherit the
	// "default" values (rp_filter, disable_ipv6).
	for _, r := range roles {
		s := []sysctl{
			{"net/ipv6/conf/all/disable_ipv6", "1"},
			{"net/ipv6/conf/default/disable_ipv6", "1"},
		}
		switch {
		case r == RoleInet:
			s = append(s, sysctl{"net/ipv4/conf/all/rp_filter", "0"}, sysctl{"net/ipv4/conf/default/rp_filter", "0"})
		case r == RoleRouter:
			// rp_filter stays at the namespace defaults: the daemon sets
			// what it needs.
			s = append(s, sysctl{"net/ipv4/ip_forward", "1"})
		case strings.HasPrefix(r, "isp"):
			s = append(s, sysctl{"net/ipv4/ip_forward", "1"},
				sysctl{"net/ipv4/conf/all/rp_filter", "0"}, sysctl{"net/ipv4/conf/default/rp_filter", "0"})
		}
		if err := l.Do(r, func() error { return writeSysctls(s) }); err != nil {
			return fmt.Errorf("lab: sysctls in %s: %w", r, err)
		}
		lo, err := l.nl[r].LinkByName("lo")
		if err == nil {
			err = l.nl[r].LinkSetUp(lo)
		}
		if err != nil {
			return fmt.Errorf("lab: lo up in %s: %w", r, err)
		}
	}

	inet := l.nl[RoleInet]
	lo, err := inet.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lab: inet lo: %w", err)
	}
	for _, a := range []netip.Addr{Target1, Target2, SinkAddr} {
		if err := inet.AddrAdd(lo, nlAddr(netip.PrefixFrom(a, 32))); err != nil {
			return fmt.Errorf("lab: inet lo %s: %w", a, err)
		}
	}

	// LAN: rtr lan0 <-> client eth0.
	if err := l.veth(RoleRouter, RouterLANIf, netip.PrefixFrom(RouterLAN, 24),
		RoleClient, ClientIf, netip.PrefixFrom(ClientAddr, 24)); err != nil {
		return err
	}
	if err := l.defaultRoute(RoleClient, ClientIf, RouterLAN); err != nil {
		return err
	}

	// ISPs in parallel: the netlink handles serialise per socket and the
	// expensive part, iptables-restore, is a process per ISP. 4 workers keep
	// a 2-core machine busy without starving it.
	work := make(chan int)
	errc := make(chan error, l.n)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				errc <- l.buildISP(i)
			}
		}()
	}
	for i := 1; i <= l.n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	if l.opts.RouterNAT {
		rules := "*nat\n-A POSTROUTING -o wan+ -j MASQUERADE\nCOMMIT\n"
		if _, err := run([]byte(rules), "ip", "netns", "exec", l.NS(RoleRouter), "iptables-restore", "--noflush"); err != nil {
			return fmt.Errorf("lab: router NAT: %w", err)
		}
	}
	return nil
}

func (l *Lab) buildISP(i int) error {
	isp := ISPRole(i)
	up := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 1}), 30)
	if err := l.veth(RoleInet, "isp"+strconv.Itoa(i), up,
		isp, ISPUpIf, netip.PrefixFrom(ISPUpstreamAddr(i), 30)); err != nil {
		return err
	}
	var wanAddr netip.Prefix
	if l.opts.RouterAddrs {
		wanAddr = RouterWANAddr(i)
	}
	if err := l.veth(isp, ISPCustIf, netip.PrefixFrom(ISPGateway, 24), RoleRouter, WANName(i), wanAddr); err != nil {
		return err
	}
	if err := l.defaultRoute(isp, ISPUpIf, up.Addr()); err != nil {
		return err
	}
	// MASQUERADE lets inet tell ISPs apart by source and needs no return
	// routes towards the customers. LABFAULT is the lab's own chain so
	// that Restore is a single flush.
	rules := fmt.Sprintf("*nat\n-A POSTROUTING -o %s -j MASQUERADE\nCOMMIT\n"+
		"*filter\n:%s - [0:0]\n-A FORWARD -j %s\nCOMMIT\n", ISPUpIf, faultChain, faultChain)
	if _, err := run([]byte(rules), "ip", "netns", "exec", l.NS(isp), "iptables-restore", "--noflush"); err != nil {
		return fmt.Errorf("lab: firewall in %s: %w", isp, err)
	}
	return nil
}

// veth creates a veth pair with one end in each namespace, addresses the
// ends whose prefix is valid and sets both up.
func (l *Lab) veth(roleA, nameA string, addrA netip.Prefix, roleB, nameB string, addrB netip.Prefix) error {
	ha, hb := l.nl[roleA], l.nl[roleB]
	// Created through A's handle with the peer placed straight into B: no
	// end ever exists in the root namespace, where its name could collide
	// with another test's.
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: nameA},
		PeerName:      nameB,
		PeerNamespace: netlink.NsFd(int(l.ns[roleB])),
	}
	if err := ha.LinkAdd(v); err != nil {
		return fmt.Errorf("lab: veth %s/%s <-> %s/%s: %w", roleA, nameA, roleB, nameB, err)
	}
	for _, end := range []struct {
		h    *netlink.Handle
		role string
		name string
		addr netip.Prefix
	}{{ha, roleA, nameA, addrA}, {hb, roleB, nameB, addrB}} {
		link, err := end.h.LinkByName(end.name)
		if err != nil {
			return fmt.Errorf("lab: %s/%s: %w", end.role, end.name, err)
		}
		if end.addr.IsValid() {
			if err := end.h.AddrAdd(link, nlAddr(end.addr)); err != nil {
				return fmt.Errorf("lab: address %s on %s/%s: %w", end.addr, end.role, end.name, err)
			}
		}
		if err := end.h.LinkSetUp(link); err != nil {
			return fmt.Errorf("lab: %s/%s up: %w", end.role, end.name, err)
		}
	}
	return nil
}

func (l *Lab) defaultRoute(role, dev string, gw netip.Addr) error {
	h := l.nl[role]
	link, err := h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("lab: %s/%s: %w", role, dev, err)
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.IP(gw.AsSlice())}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("lab: default via %s dev %s in %s: %w", gw, dev, role, err)
	}
	return nil
}

func nlAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}}
}

type sysctl struct{ key, value string }

// writeSysctls must run inside the target namespace: /proc/sys/net resolves
// to the network namespace of the thread that opens it.
func writeSysctls(s []sysctl) error {
	for _, kv := range s {
		if err := os.WriteFile(filepath.Join("/proc/sys", kv.key), []byte(kv.value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(kv.key, "/", "."), kv.value, err)
		}
	}
	return nil
}

// WaitLink polls until the named link in role's namespace satisfies cond or
// timeout passes; it returns the last state seen. Useful after a fault,
// since carrier changes propagate asynchronously.
func (l *Lab) WaitLink(role, name string, timeout time.Duration, cond func(netlink.Link) bool) (netlink.Link, error) {
	h, err := l.Handle(role)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		link, err := h.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("lab: %s/%s: %w", role, name, err)
		}
		if cond(link) {
			return link, nil
		}
		if time.Now().After(deadline) {
			return link, fmt.Errorf("lab: %s/%s: condition not met within %v (flags %v, oper %v)",
				role, name, timeout, link.Attrs().Flags, link.Attrs().OperState)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package dhcp

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/wanreact/wanreact/reactor"
)

// testNet is a client namespace and an "ISP" namespace joined by a veth
// pair: wan0 (client side, left admin-down so the test controls carrier)
// and isp0 (198.18.0.1/24, up).
type testNet struct {
	cliName, ispName string
	cli, isp         netns.NsHandle
	hCli, hIsp       *netlink.Handle
}

var ispAddr = netip.MustParsePrefix("198.18.0.1/24")

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) to create network namespaces")
	}
}

func randSuffix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newNamedNS creates a named namespace from a throwaway thread, so the
// test's own threads never change namespace.
func newNamedNS(t *testing.T, name string) netns.NsHandle {
	t.Helper()
	type res struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		h, err := netns.NewNamed(name)
		ch <- res{h, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("create netns %s: %v", name, r.err)
	}
	t.Cleanup(func() {
		r.h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return r.h
}

func newTestNet(t *testing.T) *testNet {
	requireRoot(t)
	s := randSuffix()
	n := &testNet{cliName: "wrdh-" + s + "-cli", ispName: "wrdh-" + s + "-isp"}
	n.cli = newNamedNS(t, n.cliName)
	n.isp = newNamedNS(t, n.ispName)
	var err error
	if n.hCli, err = netlink.NewHandleAt(n.cli); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.hCli.Close)
	if n.hIsp, err = netlink.NewHandleAt(n.isp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.hIsp.Close)

	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "wan0"}, PeerName: "isp0", PeerNamespace: netlink.NsFd(int(n.isp))}
	if err := n.hCli.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	for _, h := range []*netlink.Handle{n.hCli, n.hIsp} {
		lo, err := h.LinkByName("lo")
		if err == nil {
			err = h.LinkSetUp(lo)
		}
		if err != nil {
			t.Fatalf("lo up: %v", err)
		}
	}
	isp := n.link(t, n.hIsp, "isp0")
	if err := n.hIsp.AddrAdd(isp, &netlink.Addr{IPNet: prefixToIPNet(ispAddr)}); err != nil {
		t.Fatalf("isp0 address: %v", err)
	}
	if err := n.hIsp.LinkSetUp(isp); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *testNet) link(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

func (n *testNet) setWAN(t *testing.T, up bool) {
	t.Helper()
	l := n.link(t, n.hCli, "wan0")
	var err error
	if up {
		err = n.hCli.LinkSetUp(l)
	} else {
		err = n.hCli.LinkSetDown(l)
	}
	if err != nil {
		t.Fatalf("wan0 up=%v: %v", up, err)
	}
}

// carrierUp brings wan0 up and waits until the ISP side can transmit.
// Both veth ends get carrier at once, and until the kernel's linkwatch work
// has activated isp0's qdisc the server's replies are dropped; a real ISP's
// port is long up when the router's link comes up, so the rig waits for
// that side. Waiting for wan0 itself is the client's job (operReady).
func (n *testNet) carrierUp(t *testing.T) {
	t.Helper()
	n.setWAN(t, true)
	for i := 0; i < 200; i++ {
		if l := n.link(t, n.hIsp, "isp0"); l.Attrs().OperState == netlink.OperUp {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("isp0 not operationally up after 1 s")
}

// wanAddrs lists wan0's IPv4 addresses.
func (n *testNet) wanAddrs(t *testing.T) []netip.Prefix {
	t.Helper()
	as, err := n.hCli.AddrList(n.link(t, n.hCli, "wan0"), netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Prefix
	for _, a := range as {
		ip, _ := netip.AddrFromSlice(a.IP.To4())
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, ones))
	}
	return out
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// startProc runs a command inside the ISP namespace, collecting its output;
// it is killed (by its own pid) at cleanup.
type proc struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	out strings.Builder
	ch  chan string // every output line
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *proc) count(s string) int { return strings.Count(p.log(), s) }

func startInNS(t *testing.T, ns string, ready string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	p := &proc{cmd: cmd, ch: make(chan string, 1024)}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		pw.Close()
		close(exited)
	}()
	readyC := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.out.WriteString(line + "\n")
			p.mu.Unlock()
			if strings.Contains(line, ready) {
				once.Do(func() { close(readyC) })
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s output:\n%s", args[0], p.log())
		}
	})
	select {
	case <-readyC:
	case <-exited:
		t.Fatalf("%s exited early:\n%s", args[0], p.log())
	case <-time.After(5 * time.Second):
		t.Fatalf("%s not ready after 5 s:\n%s", args[0], p.log())
	}
	return p
}

// testClient runs a Client in the client namespace. Its emit plays the
// reducer's part for the address: a new prefix is put on wan0, a removed
// one taken off, an unchanged one left alone (level-triggered, like the
// real actions).
type testClient struct {
	c      *Client
	events chan reactor.Event
	hooks  chan string
	cancel context.CancelFunc
	done   chan error
}

func startClient(t *testing.T, n *testNet, o Options) *testClient {
	t.Helper()
	o.WAN, o.Interface, o.NetNS = "isp1", "wan0", n.cli
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(&tlogWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	tc := &testClient{events: make(chan reactor.Event, 64), hooks: make(chan string, 64), done: make(chan error, 1)}
	o.OnHook = func(reason string, old, new *Lease) {
		select {
		case tc.hooks <- reason:
		default:
		}
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	tc.c = c
	ctx, cancel := context.WithCancel(context.Background())
	tc.cancel = cancel
	var current netip.Prefix
	for _, p := range n.wanAddrs(t) {
		current = p
	}
	emit := func(ev reactor.Event) {
		lc := ev.Data.(reactor.LeaseChange)
		wan := n.link(t, n.hCli, "wan0")
		switch lc.Kind {
		case "bound", "renewed":
			if lc.Prefix != current {
				if current.IsValid() {
					n.hCli.AddrDel(wan, &netlink.Addr{IPNet: prefixToIPNet(current)})
				}
				if err := n.hCli.AddrAdd(wan, &netlink.Addr{IPNet: prefixToIPNet(lc.Prefix)}); err != nil {
					t.Errorf("add %v: %v", lc.Prefix, err)
				}
				current = lc.Prefix
			}
		default:
			if current.IsValid() {
				n.hCli.AddrDel(wan, &netlink.Addr{IPNet: prefixToIPNet(current)})
				current = netip.Prefix{}
			}
		}
		tc.events <- ev
	}
	go func() { tc.done <- c.Run(ctx, emit) }()
	t.Cleanup(tc.stop)
	return tc
}

// stop ends Run and waits for it (idempotent).
func (tc *testClient) stop() {
	tc.cancel()
	if err, ok := <-tc.done; ok {
		close(tc.done)
		if err != nil {
			panic(fmt.Sprintf("Run: %v", err))
		}
	}
}

func (tc *testClient) next(t *testing.T, within time.Duration) reactor.LeaseChange {
	t.Helper()
	select {
	case ev := <-tc.events:
		if ev.WAN != "isp1" {
			t.Fatalf("event WAN %q", ev.WAN)
		}
		return ev.Data.(reactor.LeaseChange)
	case <-time.After(within):
		t.Fatalf("no lease event within %v (state %s)", within, tc.c.Status().State)
	}
	panic("unreachable")
}

func (tc *testClient) noEvent(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case ev := <-tc.events:
		t.Fatalf("unexpected event %+v", ev.Data)
	case <-time.After(d):
	}
}

// waitState polls Status until the state is s.
func (tc *testClient) waitState(t *testing.T, s State, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if tc.c.Status().State == s.String() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("state %s, want %s", tc.c.Status().State, s)
}

type tlogWriter struct {
	t  *testing.T
	mu sync.Mutex
}

func (w *tlogWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// shiftClock is real time plus an offset the test can jump forward:
// retransmissions run in real time while T1, T2 and expiry are reached
// at once by Advance.
type shiftClock struct {
	mu     sync.Mutex
	off    time.Duration
	timers []*shiftTimer
}

type shiftTimer struct {
	clk   *shiftClock
	at    time.Time
	c     chan time.Time
	t     *time.Timer
	fired bool
}

func (c *shiftClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *shiftClock) NewTimer(d time.Duration) Timer {
	st := &shiftTimer{clk: c, c: make(chan time.Time, 1)}
	c.mu.Lock()
	defer c.mu.Unlock()
	st.at = time.Now().Add(c.off + d)
	c.timers = append(c.timers, st)
	st.t = time.AfterFunc(d, st.fire)
	return st
}

func (st *shiftTimer) fire() {
	st.clk.mu.Lock()
	defer st.clk.mu.Unlock()
	st.fireLocked()
}

func (st *shiftTimer) fireLocked() {
	if !st.fired {
		st.fired = true
		st.c <- st.at
	}
}

func (st *shiftTimer) C() <-chan time.Time { return st.c }

func (st *shiftTimer) Stop() bool {
	st.clk.mu.Lock()
	defer st.clk.mu.Unlock()
	if st.t != nil {
		st.t.Stop()
	}
	was := !st.fired
	st.fired = true
	return was
}

// AdvanceTo jumps the clock just past t. The margin covers the driver's
// own arithmetic: it arms a timer for "deadline minus now", and by the time
// the timer is created a little real time has passed, so the timer is due
// a few microseconds after the deadline (as with real timers).
func (c *shiftClock) AdvanceTo(t time.Time) { c.Advance(t.Sub(c.Now()) + time.Millisecond) }

// Advance jumps the clock and fires every timer now due.
func (c *shiftClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
	now := time.Now().Add(c.off)
	live := c.timers[:0]
	for _, st := range c.timers {
		if !st.fired && !st.at.After(now) {
			st.fireLocked()
		}
		if !st.fired {
			live = append(live, st)
		}
	}
	c.timers = live
}

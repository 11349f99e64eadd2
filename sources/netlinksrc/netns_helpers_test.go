package netlinksrc

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

// Helpers for tests against the real kernel. Each test creates its own
// namespace named wrnl-<random>-<role>, mutates it with iproute2 (an
// implementation independent of this package) and reads the kernel's truth
// back with vishvananda/netlink (another independent decoder).

type testNS struct {
	name string
	h    netns.NsHandle
	nl   *netlink.Handle
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2 (ip)")
	}
}

func newNS(t *testing.T, role string) *testNS {
	t.Helper()
	requireRoot(t)
	var r [3]byte
	rand.Read(r[:])
	name := fmt.Sprintf("wrnl-%s-%s", hex.EncodeToString(r[:]), role)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &testNS{name: name, h: netns.None()}
	t.Cleanup(func() {
		if n.nl != nil {
			n.nl.Close()
		}
		if n.h.IsOpen() {
			n.h.Close()
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	n.h = h
	if n.nl, err = netlink.NewHandleAt(h); err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	n.ip(t, "link", "set", "lo", "up")
	return n
}

// ip runs "ip -n NS args...".
func (n *testNS) ip(t testing.TB, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"-n", n.name}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s %s: %v: %s", n.name, strings.Join(args, " "), err, out)
	}
}

// batch runs "ip -n NS -batch -" with one command per line.
func (n *testNS) batch(t testing.TB, lines []string) {
	t.Helper()
	cmd := exec.Command("ip", "-n", n.name, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip -batch (%d lines): %v: %s", len(lines), err, out)
	}
}

func (n *testNS) index(t testing.TB, name string) int {
	t.Helper()
	l, err := n.nl.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l.Attrs().Index
}

// recorder is the emit callback of the tests. It keeps the log and the view
// a consumer builds from it.
type recorder struct {
	mu       sync.Mutex
	events   []reactor.Event
	recvAt   []time.Time
	links    map[int]reactor.LinkChange
	addrs    map[reactor.AddrChange]bool
	routes   map[reactor.RouteChange]bool
	rules    map[reactor.RuleChange]bool
	dupAdds  int // "added" for something already present
	badDels  int // "removed" for something not present
	lastTime time.Time
	backward int // events with a timestamp before the previous one
	gate     chan struct{}
	notify   chan struct{}
}

func newRecorder() *recorder {
	return &recorder{
		links: map[int]reactor.LinkChange{}, addrs: map[reactor.AddrChange]bool{},
		routes: map[reactor.RouteChange]bool{}, rules: map[reactor.RuleChange]bool{},
		notify: make(chan struct{}, 1),
	}
}

func (r *recorder) emit(e reactor.Event) {
	now := time.Now()
	r.mu.Lock()
	gate := r.gate
	r.mu.Unlock()
	if gate != nil {
		<-gate // a slow consumer, to make the kernel overrun the socket
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	r.recvAt = append(r.recvAt, now)
	if e.Time.Before(r.lastTime) {
		r.backward++
	}
	r.lastTime = e.Time
	set := func(had, adding bool) {
		if had && adding {
			r.dupAdds++
		}
		if !had && !adding {
			r.badDels++
		}
	}
	switch p := e.Data.(type) {
	case reactor.LinkChange:
		if p.Deleted {
			delete(r.links, p.Index)
		} else {
			r.links[p.Index] = p
		}
	case reactor.AddrChange:
		k := p
		k.Name, k.Deleted = "", false
		_, had := r.addrs[k]
		set(had, !p.Deleted)
		if p.Deleted {
			delete(r.addrs, k)
		} else {
			r.addrs[k] = true
		}
	case reactor.RouteChange:
		k := p
		k.Deleted = false
		_, had := r.routes[k]
		set(had, !p.Deleted)
		if p.Deleted {
			delete(r.routes, k)
		} else {
			r.routes[k] = true
		}
	case reactor.RuleChange:
		k := p
		k.Deleted = false
		_, had := r.rules[k]
		set(had, !p.Deleted)
		if p.Deleted {
			delete(r.rules, k)
		} else {
			r.rules[k] = true
		}
	}
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// since returns the payloads emitted after mark m.
func (r *recorder) since(m int) []reactor.Payload {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []reactor.Payload
	for _, e := range r.events[m:] {
		out = append(out, e.Data)
	}
	return out
}

// waitFor waits until some payload emitted after mark m satisfies match,
// and returns its index in the log.
func (r *recorder) waitFor(t testing.TB, m int, what string, match func(reactor.Payload) bool) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		for i := m; i < len(r.events); i++ {
			if match(r.events[i].Data) {
				r.mu.Unlock()
				return i
			}
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; emitted since: %+v", what, r.since(m))
		}
		select {
		case <-r.notify:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (r *recorder) waitPayload(t testing.TB, m int, want reactor.Payload) int {
	t.Helper()
	return r.waitFor(t, m, fmt.Sprintf("%T %+v", want, want), func(p reactor.Payload) bool { return p == want })
}

// barrier makes a change that is sure to be emitted (an address on lo) and
// waits for it: everything the kernel notified before it has been handled.
func (r *recorder) barrier(t testing.TB, n *testNS) {
	t.Helper()
	var b [2]byte
	rand.Read(b[:])
	p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, b[0], b[1]}), 32)
	m := r.mark()
	n.ip(t, "addr", "add", p.String(), "dev", "lo")
	r.waitFor(t, m, "barrier "+p.String(), func(x reactor.Payload) bool {
		a, ok := x.(reactor.AddrChange)
		return ok && a.Prefix == p && !a.Deleted
	})
}

func startSource(t *testing.T, n *testNS, o Options) (*Source, *recorder) {
	t.Helper()
	o.NetNS = n.h
	s := New(o)
	r := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, r.emit) }()
	t.Cleanup(func() {
		cancel()
		r.mu.Lock()
		if r.gate != nil {
			select {
			case <-r.gate:
			default:
				close(r.gate)
			}
		}
		r.mu.Unlock()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return within 5s of cancel")
		}
	})
	select {
	case <-s.Synced():
	case err := <-done:
		t.Fatalf("Run returned before the initial sync: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("initial sync not done within 10s")
	}
	return s, r
}

// Kernel truth, read with vishvananda/netlink.

func kernelRoutes(t testing.TB, n *testNS, filter func(int, netip.Prefix) bool) map[reactor.RouteChange]bool {
	t.Helper()
	rs, err := n.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatalf("route dump: %v", err)
	}
	out := map[reactor.RouteChange]bool{}
	for _, r := range rs {
		ones, _ := r.Dst.Mask.Size()
		a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
		dst := netip.PrefixFrom(a, ones)
		if filter != nil && !filter(r.Table, dst) {
			continue
		}
		p := reactor.RouteChange{Table: r.Table, Dst: dst, Protocol: int(r.Protocol)}
		add := func(gw []byte, idx int) {
			q := p
			if g, ok := netip.AddrFromSlice(gw); ok {
				q.Gateway = g.Unmap()
			}
			q.Index = idx
			out[q] = true
		}
		switch {
		case len(r.MultiPath) > 0:
			for _, nh := range r.MultiPath {
				add(nh.Gw.To4(), nh.LinkIndex)
			}
		default:
			add(r.Gw.To4(), r.LinkIndex)
		}
	}
	return out
}

func kernelAddrs(t testing.TB, n *testNS) map[reactor.AddrChange]bool {
	t.Helper()
	as, err := n.nl.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("addr dump: %v", err)
	}
	out := map[reactor.AddrChange]bool{}
	for _, a := range as {
		ip, _ := netip.AddrFromSlice(a.IP.To4())
		ones, _ := a.Mask.Size()
		out[reactor.AddrChange{Index: a.LinkIndex, Prefix: netip.PrefixFrom(ip, ones)}] = true
	}
	return out
}

func kernelRules(t testing.TB, n *testNS, filter func(int, int) bool) map[reactor.RuleChange]bool {
	t.Helper()
	rs, err := n.nl.RuleList(netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("rule dump: %v", err)
	}
	out := map[reactor.RuleChange]bool{}
	for _, r := range rs {
		if filter != nil && !filter(r.Priority, r.Table) {
			continue
		}
		out[reactor.RuleChange{Priority: r.Priority, Table: r.Table, Mark: r.Mark, Protocol: int(r.Protocol)}] = true
	}
	return out
}

func kernelLinks(t testing.TB, n *testNS) map[int]reactor.LinkChange {
	t.Helper()
	ls, err := n.nl.LinkList()
	if err != nil {
		t.Fatalf("link dump: %v", err)
	}
	out := map[int]reactor.LinkChange{}
	for _, l := range ls {
		a := l.Attrs()
		c := reactor.LinkChange{Index: a.Index, Name: a.Name, AdminUp: a.RawFlags&unix.IFF_UP != 0, Carrier: a.RawFlags&unix.IFF_LOWER_UP != 0}
		c.OperUp = a.OperState == netlink.OperUp || (a.OperState == netlink.OperUnknown && c.Carrier)
		out[a.Index] = c
	}
	return out
}

// diff describes how two sets differ ("" when equal).
func diff[K comparable](got, want map[K]bool) string {
	var b bytes.Buffer
	for _, k := range sortedKeys(want) {
		if !got[k] {
			fmt.Fprintf(&b, "  missing %+v\n", k)
		}
	}
	for _, k := range sortedKeys(got) {
		if !want[k] {
			fmt.Fprintf(&b, "  stale   %+v\n", k)
		}
	}
	return b.String()
}

func sortedKeys[K comparable](m map[K]bool) []K {
	ks := slices.Collect(maps.Keys(m))
	slices.SortFunc(ks, func(a, b K) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return ks
}

// viewMatchesKernel compares the recorder's view with the kernel's state;
// it returns "" when they match.
func viewMatchesKernel(t testing.TB, n *testNS, r *recorder, rf func(int, netip.Prefix) bool, ruf func(int, int) bool) string {
	t.Helper()
	kr, ka, ku, kl := kernelRoutes(t, n, rf), kernelAddrs(t, n), kernelRules(t, n, ruf), kernelLinks(t, n)
	r.mu.Lock()
	defer r.mu.Unlock()
	var out string
	if d := diff(r.routes, kr); d != "" {
		out += "routes:\n" + d
	}
	if d := diff(r.addrs, ka); d != "" {
		out += "addrs:\n" + d
	}
	if d := diff(r.rules, ku); d != "" {
		out += "rules:\n" + d
	}
	gl, wl := map[reactor.LinkChange]bool{}, map[reactor.LinkChange]bool{}
	for _, l := range r.links {
		gl[l] = true
	}
	for _, l := range kl {
		wl[l] = true
	}
	if d := diff(gl, wl); d != "" {
		out += "links:\n" + d
	}
	return out
}

// eventuallyMatches waits (bounded) until the view matches the kernel.
func eventuallyMatches(t testing.TB, n *testNS, r *recorder, rf func(int, netip.Prefix) bool, ruf func(int, int) bool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		d := viewMatchesKernel(t, n, r, rf, ruf)
		if d == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("emitted view differs from the kernel after %v:\n%s", timeout, d)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

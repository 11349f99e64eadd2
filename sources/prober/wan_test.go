package prober

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wanreact/wanreact/reactor"
	"golang.org/x/sys/unix"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

type sentPacket struct {
	msg []byte
	dst [4]byte
}

// fakeSocket records what is sent and returns what is pushed into in.
type fakeSocket struct {
	mu      sync.Mutex
	sent    []sentPacket
	sendErr error
	in      chan []byte
	closed  chan struct{}
	once    sync.Once
	// deadline (zero: none) and intr emulate a read deadline.
	deadline time.Time
	intr     chan struct{}
}

func newFakeSocket() *fakeSocket {
	return &fakeSocket{in: make(chan []byte, 64), closed: make(chan struct{}), intr: make(chan struct{}, 1)}
}

func (s *fakeSocket) setWait(d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deadline = time.Time{}
	if d >= 0 {
		s.deadline = time.Now().Add(d)
	}
	select { // a new deadline replaces an interrupt, as with a real one
	case <-s.intr:
	default:
	}
	return nil
}

func (s *fakeSocket) interrupt() {
	select {
	case s.intr <- struct{}{}:
	default:
	}
}

func (s *fakeSocket) send(msg []byte, dst [4]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sendErr != nil {
		return s.sendErr
	}
	s.sent = append(s.sent, sentPacket{append([]byte(nil), msg...), dst})
	return nil
}

func (s *fakeSocket) recv(buf []byte) (int, error) {
	s.mu.Lock()
	dl := s.deadline
	s.mu.Unlock()
	var expired <-chan time.Time
	if !dl.IsZero() {
		expired = time.After(time.Until(dl))
	}
	select {
	case b := <-s.in:
		return copy(buf, b), nil
	case <-s.closed:
		return 0, os.ErrClosed
	case <-s.intr:
		return 0, os.ErrDeadlineExceeded
	case <-expired:
		return 0, os.ErrDeadlineExceeded
	}
}

func (s *fakeSocket) close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

func (s *fakeSocket) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

func (s *fakeSocket) sentPackets() []sentPacket {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sentPacket(nil), s.sent...)
}

// results collects emitted events.
type results struct {
	mu sync.Mutex
	ev []reactor.Event
}

func (r *results) emit(e reactor.Event) {
	r.mu.Lock()
	r.ev = append(r.ev, e)
	r.mu.Unlock()
}

func (r *results) take() []reactor.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.ev
	r.ev = nil
	return ev
}

// lockedBuffer is a log sink safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

var (
	t0     = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tgtA   = netip.MustParseAddr("198.51.100.1")
	tgtB   = netip.MustParseAddr("198.51.100.2")
	wanSrc = [4]byte{203, 0, 113, 2}
)

// harness is one wanProbe driven by hand with a fake clock.
type harness struct {
	t     *testing.T
	clock *fakeClock
	w     *wanProbe
	res   *results
	logs  *lockedBuffer
	sock  *fakeSocket
	// openErr, when set, makes open fail; opens counts the attempts.
	openErr error
	opens   int
}

func newHarness(t *testing.T, tg Target) *harness {
	h := &harness{t: t, clock: &fakeClock{t: t0}, res: &results{}, logs: &lockedBuffer{}}
	d := deps{
		now:  h.clock.Now,
		rand: rand.NewChaCha8([32]byte{1}),
		log:  slog.New(slog.NewTextHandler(h.logs, nil)),
		open: func(*Target) (socket, error) {
			h.opens++
			if h.openErr != nil {
				return nil, h.openErr
			}
			h.sock = newFakeSocket()
			return h.sock, nil
		},
		emit: h.res.emit,
	}
	h.w = newWANProbe(tg, t0, d)
	t.Cleanup(h.w.closeSocket)
	return h
}

// at sets the clock and runs the WAN's due work, returning its next wake.
func (h *harness) at(d time.Duration) time.Time {
	h.clock.set(t0.Add(d))
	return h.w.tick(t0.Add(d))
}

// replyTo builds the reply a target would send to the i-th sent probe.
func (h *harness) replyTo(i int, at time.Duration) reply {
	h.t.Helper()
	sent := h.sock.sentPackets()
	if i >= len(sent) {
		h.t.Fatalf("only %d probes sent, want #%d", len(sent), i)
	}
	r, ok := parseEchoReply(ipv4Packet(sent[i].dst, wanSrc, echoToReply(sent[i].msg), 0))
	if !ok {
		h.t.Fatalf("reply to probe %d does not parse", i)
	}
	r.at = t0.Add(at)
	return r
}

func probeResult(t *testing.T, e reactor.Event) reactor.ProbeResult {
	t.Helper()
	pr, ok := e.Data.(reactor.ProbeResult)
	if !ok {
		t.Fatalf("event payload %T, want ProbeResult", e.Data)
	}
	return pr
}

func twoTargets() Target {
	return Target{WAN: "isp1", Interface: "wan0", Mark: 0x100, Addrs: []netip.Addr{tgtA, tgtB},
		Interval: 200 * time.Millisecond, Timeout: 300 * time.Millisecond}
}

func TestStaggeredSchedule(t *testing.T) {
	h := newHarness(t, twoTargets())
	// 2 targets at 200ms: one probe every 100ms, alternating targets.
	for i := 0; i < 6; i++ {
		now := time.Duration(i) * 100 * time.Millisecond
		wake := h.at(now)
		if want := t0.Add(now + 100*time.Millisecond); !wake.Equal(want) {
			t.Fatalf("after probe %d: wake at %v, want %v", i, wake.Sub(t0), want.Sub(t0))
		}
		// Nothing more happens before the next slot.
		h.at(now + 50*time.Millisecond)
	}
	sent := h.sock.sentPackets()
	if len(sent) != 6 {
		t.Fatalf("sent %d probes, want 6", len(sent))
	}
	ids := map[[4]byte]uint16{}
	for i, s := range sent {
		want := tgtA.As4()
		if i%2 == 1 {
			want = tgtB.As4()
		}
		if s.dst != want {
			t.Errorf("probe %d to %v, want %v", i, s.dst, want)
		}
		if s.msg[0] != icmpEchoRequest || checksum(s.msg) != 0 || len(s.msg) != echoLen {
			t.Errorf("probe %d malformed: %x", i, s.msg)
		}
		id := binary.BigEndian.Uint16(s.msg[4:])
		if prev, ok := ids[s.dst]; ok && prev != id {
			t.Errorf("probe %d: id %#x changed from %#x for the same target", i, id, prev)
		}
		ids[s.dst] = id
		if i > 0 {
			if seq, prev := binary.BigEndian.Uint16(s.msg[6:]), binary.BigEndian.Uint16(sent[i-1].msg[6:]); seq != prev+1 {
				t.Errorf("probe %d: seq %d after %d", i, seq, prev)
			}
			if bytes.Equal(s.msg[icmpHdr:], sent[i-1].msg[icmpHdr:]) {
				t.Errorf("probe %d reuses the previous nonce", i)
			}
		}
	}
	if h.opens != 1 {
		t.Errorf("socket opened %d times, want 1", h.opens)
	}
}

func TestFallingBehindSkipsInsteadOfBursting(t *testing.T) {
	h := newHarness(t, twoTargets())
	h.at(0)
	wake := h.at(10 * time.Second) // e.g. resumed from suspend
	if n := len(h.sock.sentPackets()); n != 2 {
		t.Fatalf("sent %d probes, want 2 (no burst for the missed slots)", n)
	}
	if want := t0.Add(10*time.Second + 100*time.Millisecond); !wake.Equal(want) {
		t.Fatalf("next wake %v, want %v", wake.Sub(t0), want.Sub(t0))
	}
}

func TestReplyMatching(t *testing.T) {
	h := newHarness(t, twoTargets())
	h.at(0) // probe 0 to A
	good := h.replyTo(0, 7*time.Millisecond)

	forged := map[string]reply{}
	r := good
	r.nonce[3] ^= 1
	forged["wrong nonce"] = r
	r = good
	r.id++
	forged["wrong id"] = r
	r = good
	r.seq++
	forged["wrong seq"] = r
	r = good
	r.src = tgtB.As4() // the other target answering with our id/seq/nonce
	forged["wrong source"] = r
	r = good
	r.seq += uint16(len(h.w.pending)) // same slot, other sequence number
	forged["same slot other seq"] = r
	for name, f := range forged {
		h.w.handleReply(f)
		if ev := h.res.take(); len(ev) != 0 {
			t.Fatalf("%s: produced %v", name, ev)
		}
	}

	h.w.handleReply(good)
	ev := h.res.take()
	if len(ev) != 1 {
		t.Fatalf("genuine reply produced %d events, want 1", len(ev))
	}
	pr := probeResult(t, ev[0])
	if !pr.OK || pr.RTT != 7*time.Millisecond || pr.Target != tgtA || pr.Err != "" ||
		ev[0].WAN != "isp1" || !ev[0].Time.Equal(t0.Add(7*time.Millisecond)) {
		t.Fatalf("genuine reply: %+v %+v", ev[0], pr)
	}
	// A duplicate of it, and time passing beyond the timeout, produce nothing.
	h.w.handleReply(good)
	h.at(50 * time.Millisecond)
	h.at(400 * time.Millisecond)
	for _, e := range h.res.take() {
		if pr := probeResult(t, e); pr.Seq == good.seq {
			t.Fatalf("probe %d reported again: %+v", good.seq, pr)
		}
	}
}

func TestLostAtTimeoutAndLateReplyIgnored(t *testing.T) {
	h := newHarness(t, twoTargets())
	h.at(0)
	wake := h.at(100 * time.Millisecond)
	if !wake.Equal(t0.Add(200 * time.Millisecond)) {
		t.Fatalf("wake %v", wake.Sub(t0))
	}
	h.at(200 * time.Millisecond)
	// Probe 0 (sent at 0, timeout 300ms) is due at 300ms, the next send too.
	if ev := h.res.take(); len(ev) != 0 {
		t.Fatalf("results before any timeout: %v", ev)
	}
	h.at(299 * time.Millisecond)
	if ev := h.res.take(); len(ev) != 0 {
		t.Fatalf("lost 1ms early: %v", ev)
	}
	h.at(300 * time.Millisecond)
	ev := h.res.take()
	if len(ev) != 1 {
		t.Fatalf("at the timeout: %d results, want 1", len(ev))
	}
	pr := probeResult(t, ev[0])
	first := binary.BigEndian.Uint16(h.sock.sentPackets()[0].msg[6:])
	if pr.OK || pr.Err != "" || pr.Seq != first || pr.Target != tgtA || !ev[0].Time.Equal(t0.Add(300*time.Millisecond)) {
		t.Fatalf("lost result: %+v at %v", pr, ev[0].Time.Sub(t0))
	}
	// Its reply arriving now counts for nothing.
	h.w.handleReply(h.replyTo(0, 301*time.Millisecond))
	if ev := h.res.take(); len(ev) != 0 {
		t.Fatalf("late reply produced %v", ev)
	}
}

func TestReplyPastDeadlineBeforeExpiryIsLost(t *testing.T) {
	h := newHarness(t, twoTargets())
	h.at(0)
	// The loop has not yet run its expiry when a reply stamped 1ms past the
	// deadline is handled: a result means "answered within the timeout".
	h.w.handleReply(h.replyTo(0, 301*time.Millisecond))
	ev := h.res.take()
	if len(ev) != 1 || probeResult(t, ev[0]).OK {
		t.Fatalf("got %v, want one lost result", ev)
	}
	h.at(400 * time.Millisecond)
	for _, e := range h.res.take() {
		if probeResult(t, e).Seq == probeResult(t, ev[0]).Seq {
			t.Fatalf("reported twice")
		}
	}
}

func TestOneResultPerProbeOverManyIntervals(t *testing.T) {
	// Timeout longer than the interval: several probes per target in flight.
	tg := twoTargets()
	tg.Interval, tg.Timeout = 100*time.Millisecond, 1*time.Second
	h := newHarness(t, tg)
	answered := map[uint16]bool{}
	var replies []reply
	for ms := 0; ms <= 5000; ms += 10 {
		h.at(time.Duration(ms) * time.Millisecond)
		sent := h.sock.sentPackets()
		// Answer every third probe, 20ms after it was sent.
		if ms%50 == 20 && len(sent)%3 == 0 && len(sent) > 0 {
			i := len(sent) - 1
			r := h.replyTo(i, time.Duration(ms)*time.Millisecond)
			answered[r.seq] = true
			replies = append(replies, r)
		}
		for _, r := range replies {
			h.w.handleReply(r) // replayed every time: duplicates must not count
		}
	}
	h.w.expire(t0.Add(10 * time.Second)) // report the rest, send nothing more
	seen := map[uint16]int{}
	ok := 0
	for _, e := range h.res.take() {
		pr := probeResult(t, e)
		seen[pr.Seq]++
		if pr.OK {
			ok++
			if !answered[pr.Seq] {
				t.Errorf("seq %d OK but never answered", pr.Seq)
			}
		}
	}
	sent := h.sock.sentPackets()
	if len(seen) != len(sent) {
		t.Fatalf("%d probes sent, results for %d", len(sent), len(seen))
	}
	for seq, n := range seen {
		if n != 1 {
			t.Errorf("seq %d: %d results", seq, n)
		}
	}
	if ok != len(answered) {
		t.Errorf("%d OK results, %d probes answered", ok, len(answered))
	}
}

func TestMissingInterfaceReportsErrAtNormalRate(t *testing.T) {
	tg := twoTargets()
	h := newHarness(t, tg)
	h.openErr = errNoInterface
	for ms := 0; ms < 1000; ms += 100 {
		h.at(time.Duration(ms) * time.Millisecond)
	}
	ev := h.res.take()
	if len(ev) != 10 {
		t.Fatalf("%d results in 1s, want 10 (one per probe slot)", len(ev))
	}
	for _, e := range ev {
		if pr := probeResult(t, e); pr.OK || pr.Err != errNoInterface.Error() {
			t.Fatalf("result %+v, want lost with Err %q", pr, errNoInterface)
		}
	}
	// One open attempt per interval (200ms), not per probe.
	if h.opens != 5 {
		t.Errorf("%d open attempts in 1s, want 5", h.opens)
	}
	if n := h.logs.count("cannot probe"); n != 1 {
		t.Errorf("%d log lines for one failure state, want 1:\n%s", n, h.logs.b.String())
	}
	h.openErr = errNoAddress
	h.at(1000 * time.Millisecond)
	h.at(1100 * time.Millisecond)
	if pr := probeResult(t, h.res.take()[1]); pr.Err != errNoAddress.Error() {
		t.Fatalf("after the interface appeared: %+v", pr)
	}
	h.openErr = nil
	h.at(1200 * time.Millisecond)
	if ev := h.res.take(); len(ev) != 0 {
		t.Fatalf("after the address appeared: %v", ev)
	}
	if n := len(h.sock.sentPackets()); n != 1 {
		t.Fatalf("sent %d probes once the socket opened, want 1", n)
	}
	if h.logs.count("cannot probe") != 2 || h.logs.count("msg=probing") != 1 {
		t.Errorf("want one log line per state change, got:\n%s", h.logs.b.String())
	}
}

func TestStaleSocketIsReopened(t *testing.T) {
	h := newHarness(t, twoTargets())
	h.at(0)
	old := h.sock
	old.sendErr = unix.ENODEV // interface deleted and re-created: stale ifindex
	h.at(100 * time.Millisecond)
	ev := h.res.take()
	if len(ev) != 1 || !strings.Contains(probeResult(t, ev[0]).Err, "no such device") {
		t.Fatalf("send failure: %v", ev)
	}
	if !old.isClosed() {
		t.Fatal("stale socket not closed")
	}
	h.at(200 * time.Millisecond)
	if h.sock == old || h.opens != 2 || len(h.sock.sentPackets()) != 1 {
		t.Fatalf("not reopened at the next probe: opens=%d", h.opens)
	}
	// A transient error keeps the socket.
	h.sock.sendErr = unix.ENOBUFS
	h.at(300 * time.Millisecond)
	if h.sock.isClosed() || h.opens != 2 {
		t.Fatal("socket closed on ENOBUFS")
	}
}

func TestReconfigure(t *testing.T) {
	h := newHarness(t, twoTargets())
	h.at(0)
	h.at(100 * time.Millisecond)
	sent := h.sock.sentPackets()
	idB := binary.BigEndian.Uint16(sent[1].msg[4:])
	replyA := h.replyTo(0, 150*time.Millisecond)

	// Drop A, keep B, add C; same interface and mark: same socket.
	tgtC := netip.MustParseAddr("198.51.100.3")
	tg := twoTargets()
	tg.Addrs = []netip.Addr{tgtB, tgtC}
	sock := h.sock
	h.w.reconfigure(tg, t0.Add(110*time.Millisecond))
	if sock.isClosed() {
		t.Fatal("socket reopened although interface and mark are unchanged")
	}
	// The probe in flight to the removed target still gets its result.
	h.w.handleReply(replyA)
	if ev := h.res.take(); len(ev) != 1 || !probeResult(t, ev[0]).OK {
		t.Fatalf("reply to a removed target's probe: %v", ev)
	}
	h.at(200 * time.Millisecond)
	h.at(300 * time.Millisecond)
	sent = h.sock.sentPackets()[2:]
	if len(sent) != 2 || sent[0].dst != tgtB.As4() || sent[1].dst != tgtC.As4() {
		t.Fatalf("after reconfigure sent %+v", sent)
	}
	if id := binary.BigEndian.Uint16(sent[0].msg[4:]); id != idB {
		t.Errorf("kept target's id changed %#x -> %#x", idB, id)
	}

	// New mark: new socket, at once.
	tg.Mark = 0x200
	h.w.reconfigure(tg, t0.Add(310*time.Millisecond))
	if !sock.isClosed() {
		t.Fatal("old socket kept after the mark changed")
	}
	h.at(400 * time.Millisecond)
	if h.sock == sock || h.opens != 2 {
		t.Fatalf("no new socket: opens=%d", h.opens)
	}

	// No targets: nothing is sent, pending probes still expire.
	tg.Addrs = nil
	h.w.reconfigure(tg, t0.Add(410*time.Millisecond))
	h.res.take()
	n := len(h.sock.sentPackets())
	h.at(2 * time.Second)
	if len(h.sock.sentPackets()) != n {
		t.Fatal("probes sent without targets")
	}
	if ev := h.res.take(); len(ev) == 0 {
		t.Fatal("in-flight probes never reported after targets were removed")
	}
}

func TestPendingSize(t *testing.T) {
	for _, c := range []struct {
		timeout, spacing time.Duration
		want             int
	}{
		{300 * time.Millisecond, 100 * time.Millisecond, 8},
		{600 * time.Millisecond, 50 * time.Millisecond, 16},
		{time.Hour, time.Millisecond, maxPending},
	} {
		if got := pendingSize(c.timeout, c.spacing); got != c.want {
			t.Errorf("pendingSize(%v, %v) = %d, want %d", c.timeout, c.spacing, got, c.want)
		}
	}
}

func TestSetTargetsValidation(t *testing.T) {
	p := New(Options{})
	ok := twoTargets()
	mapped := ok
	mapped.WAN = "isp2"
	mapped.Addrs = []netip.Addr{netip.MustParseAddr("::ffff:198.51.100.9"), netip.MustParseAddr("198.51.100.9")}
	bad := []Target{
		{Interface: "x", Interval: 1, Timeout: 1},
		{WAN: "a", Interval: 1, Timeout: 1},
		{WAN: "b", Interface: "0123456789abcdef", Interval: 1, Timeout: 1},
		{WAN: "c", Interface: "x", Timeout: 1},
		{WAN: "d", Interface: "x", Interval: 1},
		{WAN: "e", Interface: "x", Interval: 1, Timeout: 1, Addrs: []netip.Addr{netip.MustParseAddr("2001:db8::1")}},
		{WAN: "f", Interface: "x", Interval: 1, Timeout: 1, Addrs: []netip.Addr{{}}},
		ok, // duplicate of the first
	}
	err := p.SetTargets(append([]Target{ok, mapped}, bad...))
	if err == nil {
		t.Fatal("no error for invalid targets")
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != len(bad) {
		t.Errorf("%d errors reported, want %d:\n%v", n, len(bad), err)
	}
	if len(p.targets) != 2 || p.targets[1].Addrs[0] != netip.MustParseAddr("198.51.100.9") || len(p.targets[1].Addrs) != 1 {
		t.Fatalf("applied %+v", p.targets)
	}
	ok.Addrs[0] = netip.MustParseAddr("192.0.2.99")
	if p.targets[0].Addrs[0] != tgtA {
		t.Fatal("SetTargets keeps the caller's slice")
	}
}

// loopbackSocket answers every probe like a target would, from the
// destination address, after delay.
func loopbackOpener(delay time.Duration, opened chan<- *fakeSocket) opener {
	return func(t *Target) (socket, error) {
		s := &answeringSocket{fakeSocket: newFakeSocket(), delay: delay}
		if opened != nil {
			opened <- s.fakeSocket
		}
		return s, nil
	}
}

type answeringSocket struct {
	*fakeSocket
	delay time.Duration
}

func (s *answeringSocket) send(msg []byte, dst [4]byte) error {
	if err := s.fakeSocket.send(msg, dst); err != nil {
		return err
	}
	pkt := ipv4Packet(dst, wanSrc, echoToReply(msg), 0)
	time.AfterFunc(s.delay, func() {
		select {
		case s.in <- pkt:
		case <-s.closed:
		}
	})
	return nil
}

func TestRunAddsAndRemovesWANs(t *testing.T) {
	p := New(Options{Logger: slog.New(slog.NewTextHandler(&lockedBuffer{}, nil))})
	p.open = loopbackOpener(2*time.Millisecond, nil)
	res := &results{}
	ctx, cancel := contextWithTimeout(t, 5*time.Second)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, res.emit) }()

	a := twoTargets()
	a.Interval, a.Timeout = 40*time.Millisecond, 100*time.Millisecond
	b := a
	b.WAN, b.Interface = "isp2", "wan1"
	if err := p.SetTargets([]Target{a, b}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := p.SetTargets([]Target{a}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let isp2 stop
	res.take()
	time.Sleep(300 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	perWAN := map[string]int{}
	for _, e := range res.take() {
		pr := probeResult(t, e)
		if !pr.OK {
			t.Errorf("lost result %+v from a socket that answers everything", pr)
		}
		if pr.RTT < 2*time.Millisecond || pr.RTT > 80*time.Millisecond {
			t.Errorf("RTT %v, want about 2ms", pr.RTT)
		}
		perWAN[e.WAN]++
	}
	if perWAN["isp2"] != 0 {
		t.Errorf("removed WAN still reported %d results", perWAN["isp2"])
	}
	// 300ms at one probe per 20ms: about 15.
	if n := perWAN["isp1"]; n < 10 || n > 17 {
		t.Errorf("isp1: %d results in 300ms, want about 15", n)
	}
	if err := p.Run(ctx, res.emit); err != nil {
		t.Errorf("second Run after the first returned: %v", err)
	}
}

func TestRunRejectsConcurrentRun(t *testing.T) {
	p := New(Options{})
	p.open = loopbackOpener(0, nil)
	ctx, cancel := contextWithTimeout(t, 5*time.Second)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, func(reactor.Event) {}) }()
	time.Sleep(20 * time.Millisecond)
	if err := p.Run(ctx, func(reactor.Event) {}); err == nil {
		t.Error("second concurrent Run accepted")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := New(Options{}).Run(ctx, nil); err == nil {
		t.Error("nil emit accepted")
	}
}

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx, cancel
}

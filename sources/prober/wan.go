package prober

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/wanreact/wanreact/reactor"
	"golang.org/x/sys/unix"
)

const (
	// minSpacing bounds the probe rate of one WAN (1000 probes/s) whatever
	// the configuration says, so a typo cannot turn the prober into a flood.
	minSpacing = time.Millisecond
	// maxPending bounds the table of outstanding probes of one WAN; when a
	// configuration would need more (timeout many times the spacing), the
	// oldest probe is reported lost early rather than forgotten.
	maxPending = 1 << 12
)

// probeTarget is one target of a WAN with its ICMP identifier.
type probeTarget struct {
	addr netip.Addr
	a4   [4]byte
	id   uint16
}

// pendingProbe is a probe sent and not yet answered or reported lost.
type pendingProbe struct {
	used     bool
	a4       [4]byte
	target   netip.Addr
	id, seq  uint16
	nonce    nonce
	sent     time.Time
	deadline time.Time
}

// wanProbe is the probing state of one WAN, owned by the WAN's one goroutine
// (run), which both sends and reads: it blocks reading the socket with the
// read deadline set to its next due time, so a probe costs two wake-ups (its
// send time, its reply) and no hand-over between goroutines. Other
// goroutines only touch update and kick. tick, handleReply and reconfigure
// are plain methods driven by an explicit time, which is what the unit tests
// call with a fake clock.
type wanProbe struct {
	cfg      Target
	spacing  time.Duration
	targets  []probeTarget
	next     int    // index in targets of the next probe
	seq      uint16 // sequence number of the last probe
	nextSend time.Time
	pending  []pendingProbe // indexed by seq & (len-1); len is a power of 2

	sock     socket
	nextOpen time.Time
	openErr  string

	// kicked holds a token when the loop must look at ctx and update; the
	// kicker also interrupts a blocked read (see kick).
	kicked chan struct{}
	mu     sync.Mutex
	// sockForKick is sock as seen by kick; update is the latest Target
	// handed over by Run, nil once applied.
	sockForKick socket
	update      *Target

	// state is the Err of the last probe ("" = sent fine); the log gets a
	// line only when it changes.
	state string
	// errno/errStr cache the text of the last send error so that a WAN
	// failing at the normal probe rate does not format it every time.
	errno  unix.Errno
	errStr string

	pkt [echoLen]byte

	now  func() time.Time
	rand io.Reader
	log  *slog.Logger
	open opener
	emit func(reactor.Event)
}

func newWANProbe(t Target, now time.Time, deps deps) *wanProbe {
	w := &wanProbe{
		kicked: make(chan struct{}, 1),
		now:    deps.now,
		rand:   deps.rand,
		log:    deps.log.With("wan", t.WAN),
		open:   deps.open,
		emit:   deps.emit,
		// Sentinel: differs from any real state so the first one is logged.
		state: "\x00",
	}
	w.seq = w.randUint16()
	w.reconfigure(t, now)
	return w
}

// deps is what a WAN needs from its Prober.
type deps struct {
	now  func() time.Time
	rand io.Reader
	log  *slog.Logger
	open opener
	emit func(reactor.Event)
}

func (w *wanProbe) randUint16() uint16 {
	var b [2]byte
	if _, err := io.ReadFull(w.rand, b[:]); err != nil {
		// Identifiers need not be secret (the nonce is what makes a reply
		// unforgeable), only different from other pingers' most of the
		// time; the clock is good enough for that.
		return uint16(w.now().UnixNano() >> 10)
	}
	return binary.BigEndian.Uint16(b[:])
}

// reconfigure applies a new Target to a running WAN. Probes in flight keep
// their own target and deadline and are resolved normally (if the socket
// changes, their replies can no longer arrive and they are reported lost).
func (w *wanProbe) reconfigure(t Target, now time.Time) {
	old := w.cfg
	w.cfg = t
	if w.sock != nil && (old.Interface != t.Interface || old.Mark != t.Mark) {
		w.closeSocket()
		w.nextOpen = now
	}

	ids := make(map[netip.Addr]uint16, len(w.targets))
	for _, pt := range w.targets {
		ids[pt.addr] = pt.id
	}
	w.targets = w.targets[:0]
	for _, a := range t.Addrs {
		id, ok := ids[a]
		if !ok {
			id = w.randUint16()
		}
		w.targets = append(w.targets, probeTarget{addr: a, a4: a.As4(), id: id})
	}
	if len(w.targets) == 0 {
		w.next = 0
		w.spacing = 0
		return
	}
	w.next %= len(w.targets)
	w.spacing = max(t.Interval/time.Duration(len(w.targets)), minSpacing)
	if w.nextSend.IsZero() || w.nextSend.After(now.Add(w.spacing)) {
		w.nextSend = now
	}
	w.growPending(pendingSize(t.Timeout, w.spacing))
}

// pendingSize is the table size needed for the probes that can be
// outstanding at once (those sent within one timeout), with some slack.
func pendingSize(timeout, spacing time.Duration) int {
	need := int(timeout/spacing) + 3
	n := 8
	for n < need && n < maxPending {
		n <<= 1
	}
	return n
}

// growPending enlarges the pending table, moving outstanding probes to their
// slots in the new one. It never shrinks: a few idle slots cost nothing and
// shrinking could evict probes still in flight.
func (w *wanProbe) growPending(n int) {
	if n <= len(w.pending) {
		return
	}
	p := make([]pendingProbe, n)
	for _, pp := range w.pending {
		if pp.used {
			p[int(pp.seq)&(n-1)] = pp
		}
	}
	w.pending = p
}

// tick does what is due at now (report expired probes, send the next probe)
// and returns when it next has something to do.
func (w *wanProbe) tick(now time.Time) time.Time {
	wake := w.expire(now)
	if len(w.targets) == 0 {
		return wake
	}
	if !now.Before(w.nextSend) {
		w.sendNext(now)
		w.nextSend = w.nextSend.Add(w.spacing)
		if !w.nextSend.After(now) {
			// Fell behind (the machine was suspended, or the loop was
			// starved): skip the missed slots rather than burst.
			w.nextSend = now.Add(w.spacing)
		}
	}
	if wake.IsZero() || w.nextSend.Before(wake) {
		wake = w.nextSend
	}
	return wake
}

// expire reports the probes whose deadline has passed as lost, oldest first,
// and returns the earliest deadline still pending (zero if none).
func (w *wanProbe) expire(now time.Time) time.Time {
	var next time.Time
	n := len(w.pending)
	// The slot after the newest sequence number holds the oldest probe.
	for i := 1; i <= n; i++ {
		p := &w.pending[(int(w.seq)+i)&(n-1)]
		if !p.used {
			continue
		}
		if !p.deadline.After(now) {
			w.lost(p, now)
			continue
		}
		if next.IsZero() || p.deadline.Before(next) {
			next = p.deadline
		}
	}
	return next
}

func (w *wanProbe) lost(p *pendingProbe, now time.Time) {
	p.used = false
	w.emit(reactor.Event{Time: now, WAN: w.cfg.WAN, Data: reactor.ProbeResult{Target: p.target, Seq: p.seq}})
}

// sendNext sends one probe to the next target, or reports it lost with the
// reason it could not be sent.
func (w *wanProbe) sendNext(now time.Time) {
	t := &w.targets[w.next]
	w.next = (w.next + 1) % len(w.targets)
	w.seq++
	seq := w.seq

	if w.sock == nil && !now.Before(w.nextOpen) {
		w.reopen(now)
	}
	if w.sock == nil {
		why := w.openErr
		if why == "" {
			why = "socket closed"
		}
		w.failed(now, t.addr, seq, why)
		return
	}
	p := &w.pending[int(seq)&(len(w.pending)-1)]
	if p.used {
		// Only when more probes are outstanding than maxPending allows.
		w.lost(p, now)
	}
	if _, err := io.ReadFull(w.rand, p.nonce[:]); err != nil {
		w.failed(now, t.addr, seq, "read random nonce: "+err.Error())
		return
	}
	msg := encodeEcho(w.pkt[:], t.id, seq, &p.nonce)
	if err := w.sock.send(msg, t.a4); err != nil {
		w.failed(now, t.addr, seq, w.sendErrString(err))
		if reopenOn(err) {
			// The interface went away or lost the address the socket
			// was bound to: reopen (at the next probe) to pick up the
			// new one.
			w.closeSocket()
			w.nextOpen = now
		}
		return
	}
	*p = pendingProbe{used: true, a4: t.a4, target: t.addr, id: t.id, seq: seq, nonce: p.nonce,
		sent: now, deadline: now.Add(w.cfg.Timeout)}
	w.setState("")
}

// reopenOn reports whether a send error means the socket is stale.
func reopenOn(err error) bool {
	return errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) ||
		errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.EINVAL)
}

func (w *wanProbe) sendErrString(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		if errno != w.errno || w.errStr == "" {
			w.errno, w.errStr = errno, "send: "+errno.Error()
		}
		return w.errStr
	}
	return "send: " + err.Error()
}

// failed reports a probe that could not be sent.
func (w *wanProbe) failed(now time.Time, target netip.Addr, seq uint16, why string) {
	w.setState(why)
	w.emit(reactor.Event{Time: now, WAN: w.cfg.WAN, Data: reactor.ProbeResult{Target: target, Seq: seq, Err: why}})
}

func (w *wanProbe) setState(s string) {
	if s == w.state {
		return
	}
	if s == "" {
		w.log.Info("probing", "interface", w.cfg.Interface)
	} else {
		w.log.Warn("cannot probe", "interface", w.cfg.Interface, "err", s)
	}
	w.state = s
}

// reopen tries to open the WAN's socket; on failure the next attempt is one
// interval later, so a missing interface costs one netlink query per
// interval, not one per probe.
func (w *wanProbe) reopen(now time.Time) {
	w.nextOpen = now.Add(w.cfg.Interval)
	s, err := w.open(&w.cfg)
	if err != nil {
		w.openErr = err.Error()
		return
	}
	w.openErr = ""
	w.setSocket(s)
}

func (w *wanProbe) setSocket(s socket) {
	w.sock = s
	w.mu.Lock()
	w.sockForKick = s
	w.mu.Unlock()
}

func (w *wanProbe) closeSocket() {
	if w.sock == nil {
		return
	}
	if err := w.sock.close(); err != nil {
		w.log.Debug("close socket", "err", err)
	}
	w.setSocket(nil)
}

// setUpdate hands a new Target to the loop (latest wins) and wakes it.
func (w *wanProbe) setUpdate(t Target) {
	w.mu.Lock()
	w.update = &t
	w.mu.Unlock()
	w.kick()
}

// kick makes the loop look at ctx and update soon: it leaves a token, then
// interrupts a read in progress. The loop checks for the token after arming
// its read deadline and before reading, so either it sees the token or the
// interrupt comes after the deadline was armed and cuts the read short.
func (w *wanProbe) kick() {
	select {
	case w.kicked <- struct{}{}:
	default:
	}
	w.mu.Lock()
	if w.sockForKick != nil {
		w.sockForKick.interrupt()
	}
	w.mu.Unlock()
}

// handleReply reports the probe a reply answers, if it answers one: the
// sequence number selects the slot, and identifier, source address and nonce
// must all match. Foreign, forged, duplicate and late replies match no used
// slot and are ignored.
func (w *wanProbe) handleReply(r reply) {
	p := &w.pending[int(r.seq)&(len(w.pending)-1)]
	if !p.used || p.seq != r.seq || p.id != r.id || p.a4 != r.src || p.nonce != r.nonce {
		return
	}
	if r.at.After(p.deadline) {
		// Arrived after its timeout but before the loop got to report it:
		// a result means "answered within the timeout", so it is lost.
		w.lost(p, r.at)
		return
	}
	p.used = false
	w.emit(reactor.Event{Time: r.at, WAN: w.cfg.WAN,
		Data: reactor.ProbeResult{Target: p.target, Seq: p.seq, OK: true, RTT: max(r.at.Sub(p.sent), 0)}})
}

// run is the WAN's loop. It returns when ctx is done, with the socket closed.
func (w *wanProbe) run(ctx context.Context) {
	stop := context.AfterFunc(ctx, w.kick)
	defer stop()
	defer w.closeSocket()
	// The timer only paces the loop while there is no socket to read.
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	buf := make([]byte, readBufLen)
	for {
		select {
		case <-w.kicked:
			if ctx.Err() != nil {
				return
			}
			w.mu.Lock()
			t := w.update
			w.update = nil
			w.mu.Unlock()
			if t != nil && !equalTarget(*t, w.cfg) {
				w.reconfigure(*t, w.now())
			}
		default:
		}

		now := w.now()
		wake := w.tick(now)
		wait := time.Duration(-1) // no deadline
		if !wake.IsZero() {
			wait = max(wake.Sub(now), 0)
		}

		if w.sock == nil {
			if wait < 0 {
				timer.Stop()
			} else {
				timer.Reset(wait)
			}
			select {
			case <-timer.C:
			case <-w.kicked:
				// Put the token back for the check at the top.
				w.kick()
			}
			continue
		}

		if err := w.sock.setWait(wait); err != nil {
			w.readFailed(err)
			continue
		}
		if len(w.kicked) > 0 {
			continue
		}
		n, err := w.sock.recv(buf)
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				w.readFailed(err)
			}
			continue
		}
		r, ok := parseEchoReply(buf[:n])
		if !ok {
			continue
		}
		r.at = w.now()
		w.handleReply(r)
	}
}

// readFailed drops a socket that cannot be read; it is reopened at the next
// probe.
func (w *wanProbe) readFailed(err error) {
	w.log.Warn("reading ICMP socket", "interface", w.cfg.Interface, "err", err)
	w.closeSocket()
	w.nextOpen = w.now()
}

func equalTarget(a, b Target) bool {
	return a.WAN == b.WAN && a.Interface == b.Interface && a.Mark == b.Mark &&
		a.Interval == b.Interval && a.Timeout == b.Timeout && slices.Equal(a.Addrs, b.Addrs)
}

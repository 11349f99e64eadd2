// Package prober sends ICMP echo requests through each WAN and reports one
// reactor.ProbeResult per probe: a reply with its RTT, or lost at timeout.
//
// All WANs may sit on the same subnet behind the same gateway address, so a
// probe is steered by its socket, not by its destination: each WAN has one
// raw ICMP socket bound to the WAN's interface (SO_BINDTODEVICE) and address,
// carrying the WAN's fwmark (SO_MARK). The daemon's actions install the rule
// "fwmark <mark>/<mask> lookup <WAN table>" and the table's default route,
// and set rp_filter to loose on the WAN interfaces so that replies from
// targets reached through a non-active WAN are accepted.
//
// A reply counts only if it arrives on the WAN's interface, comes from the
// target, and carries the probe's identifier, sequence number and 16-byte
// random nonce, before the probe's timeout. Everything else (other
// programs' pings, forged, duplicate or late replies) is ignored.
//
// Per WAN the prober runs one goroutine, which sends, reads the socket and
// keeps all state; in the steady state it allocates only the interface value
// that boxes each ProbeResult into its reactor.Event.
package prober

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
	"github.com/wanreact/wanreact/reactor"
)

// Target is what to probe through one WAN.
type Target struct {
	// WAN is the WAN's name; it goes into Event.WAN.
	WAN string
	// Interface is the WAN's network interface; probes leave through it
	// and only replies arriving on it count.
	Interface string
	// Mark is the WAN's fwmark (SO_MARK), selecting its routing table.
	Mark uint32
	// Addrs are the IPv4 targets, probed in turn.
	Addrs []netip.Addr
	// Interval is the period of the probes to each target; the targets of
	// a WAN are staggered evenly over it (2 targets at 200ms: one probe
	// every 100ms, alternating).
	Interval time.Duration
	// Timeout is how long a probe waits for its reply before it is
	// reported lost. It may exceed Interval.
	Timeout time.Duration
}

// Options configures a Prober. Every field is optional.
type Options struct {
	// NetNS is the network namespace the WANs' interfaces live in; 0 (or
	// negative) means the namespace of the process.
	NetNS netns.NsHandle
	// Now is the clock (default time.Now). It is called from several
	// goroutines. Results carry its times, and RTTs are differences of
	// its readings, so it should carry a monotonic reading like
	// time.Now's.
	Now func() time.Time
	// Rand provides ICMP identifiers, initial sequence numbers and probe
	// nonces (default crypto/rand.Reader). Reads are serialised by the
	// Prober, so it need not be safe for concurrent use.
	Rand io.Reader
	// Logger gets one line per change of a WAN's ability to probe
	// (default slog.Default()).
	Logger *slog.Logger
}

// Prober probes the WANs given to SetTargets while Run runs.
type Prober struct {
	ns   netns.NsHandle
	now  func() time.Time
	rand io.Reader
	log  *slog.Logger
	// open, when set, replaces the raw sockets (unit tests).
	open opener

	mu      sync.Mutex
	targets []Target
	changed chan struct{} // capacity 1: "targets changed since Run looked"

	running atomic.Bool
}

// New returns a Prober with no targets.
func New(o Options) *Prober {
	p := &Prober{
		ns:      o.NetNS,
		now:     o.Now,
		log:     o.Logger,
		changed: make(chan struct{}, 1),
	}
	if p.now == nil {
		p.now = time.Now
	}
	r := o.Rand
	if r == nil {
		r = rand.Reader
	}
	p.rand = &lockedReader{r: r}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.log = p.log.With("source", "probe")
	return p
}

// lockedReader serialises reads of a reader shared by the WANs' loops.
type lockedReader struct {
	mu sync.Mutex
	r  io.Reader
}

func (l *lockedReader) Read(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(b)
}

// SetTargets replaces the set of WANs to probe (one Target per WAN). It may
// be called before or while Run runs; a running Prober starts new WANs,
// stops removed ones and reconfigures changed ones without disturbing the
// others. Invalid entries (missing name or interface, duplicate WAN name,
// non-positive interval or timeout, a target that is not IPv4) are left
// out and reported in the returned error; the valid ones are applied.
func (p *Prober) SetTargets(ts []Target) error {
	valid := make([]Target, 0, len(ts))
	var errs []error
	seen := make(map[string]bool, len(ts))
	for _, t := range ts {
		t, err := normalize(t)
		if err == nil && seen[t.WAN] {
			err = fmt.Errorf("wan %q: listed twice", t.WAN)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		seen[t.WAN] = true
		valid = append(valid, t)
	}
	p.mu.Lock()
	p.targets = valid
	p.mu.Unlock()
	select {
	case p.changed <- struct{}{}:
	default:
	}
	return errors.Join(errs...)
}

// normalize checks t and returns a copy that shares nothing with the
// caller, with IPv4-mapped IPv6 addresses unmapped and duplicates removed.
func normalize(t Target) (Target, error) {
	switch {
	case t.WAN == "":
		return t, errors.New("target without a WAN name")
	case t.Interface == "" || len(t.Interface) > 15:
		return t, fmt.Errorf("wan %q: bad interface name %q", t.WAN, t.Interface)
	case t.Interval <= 0:
		return t, fmt.Errorf("wan %q: interval %v is not positive", t.WAN, t.Interval)
	case t.Timeout <= 0:
		return t, fmt.Errorf("wan %q: timeout %v is not positive", t.WAN, t.Timeout)
	}
	addrs := make([]netip.Addr, 0, len(t.Addrs))
	for _, a := range t.Addrs {
		a = a.Unmap()
		if !a.Is4() || a.IsUnspecified() || a.IsMulticast() {
			return t, fmt.Errorf("wan %q: target %v is not an IPv4 unicast address", t.WAN, a)
		}
		dup := false
		for _, b := range addrs {
			dup = dup || a == b
		}
		if !dup {
			addrs = append(addrs, a)
		}
	}
	t.Addrs = addrs
	return t, nil
}

// wanRunner is a running WAN loop as seen from Run.
type wanRunner struct {
	cfg    Target
	w      *wanProbe
	cancel context.CancelFunc
	done   chan struct{}
}

// Run probes the configured WANs until ctx is done, calling emit with one
// ProbeResult event per probe (none for probes still in flight when ctx
// ends). emit is called from one goroutine per WAN, so
// it must be safe for concurrent use; it should not block for long, since a
// WAN's loop waits for it. Run returns nil once ctx is done and every
// goroutine it started has ended; it fails only if it cannot start (no
// netlink access to the namespace, already running).
//
// A WAN whose interface is missing or has no IPv4 address yet reports each
// probe as lost with Err set, at the normal rate, and retries opening its
// socket once per interval.
func (p *Prober) Run(ctx context.Context, emit func(reactor.Event)) error {
	if emit == nil {
		return errors.New("prober: nil emit")
	}
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("prober: already running")
	}
	defer p.running.Store(false)

	open := p.open
	if open == nil {
		o, err := newNetnsOpener(p.ns)
		if err != nil {
			return fmt.Errorf("prober: %w", err)
		}
		defer o.close()
		open = o.open
	}
	d := deps{now: p.now, rand: p.rand, log: p.log, open: open, emit: emit}

	wans := map[string]*wanRunner{}
	defer func() {
		for _, r := range wans {
			r.cancel()
		}
		for _, r := range wans {
			<-r.done
		}
	}()
	for {
		p.mu.Lock()
		ts := p.targets
		p.mu.Unlock()
		p.apply(ctx, wans, ts, d)
		select {
		case <-ctx.Done():
			return nil
		case <-p.changed:
		}
	}
}

// apply starts, reconfigures and stops WAN loops to match ts.
func (p *Prober) apply(ctx context.Context, wans map[string]*wanRunner, ts []Target, d deps) {
	keep := make(map[string]bool, len(ts))
	for _, t := range ts {
		keep[t.WAN] = true
		if r, ok := wans[t.WAN]; ok {
			if !equalTarget(r.cfg, t) {
				r.cfg = t
				r.w.setUpdate(t)
			}
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		r := &wanRunner{cfg: t, w: newWANProbe(t, p.now(), d), cancel: cancel, done: make(chan struct{})}
		wans[t.WAN] = r
		go func() {
			defer close(r.done)
			r.w.run(wctx)
		}()
	}
	for name, r := range wans {
		if !keep[name] {
			r.cancel()
			<-r.done
			delete(wans, name)
		}
	}
}

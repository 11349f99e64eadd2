// Package netlinksrc turns the kernel's rtnetlink notifications into
// wanreact events: reactor.LinkChange, reactor.AddrChange (IPv4),
// reactor.RouteChange (IPv4) and reactor.RuleChange (IPv4).
//
// Design (after Tailscale's net/netmon):
//
//   - One netlink socket, opened in the watched namespace, joins the link,
//     IPv4 address, IPv4 route and IPv4 rule groups. A single socket keeps
//     the kernel's ordering between kinds; the initial and recovery dumps are
//     requested on that same socket, so dump parts and notifications are
//     read in the order the kernel produced them.
//   - Duplicate suppression happens here: the kernel sends RTM_NEWLINK for
//     statistics, MTU or IPv6 changes, RTM_NEWADDR on every lifetime
//     refresh, and so on. A LinkChange is emitted only when (Name, AdminUp,
//     Carrier, OperUp, Deleted) changes; addresses, routes and rules only
//     when they appear or disappear (as projected onto the event fields).
//   - The kernel removes IPv4 routes without any RTM_DELROUTE when a link
//     goes down or away, or loses its last IPv4 address. The source mirrors
//     that (see tracker.flushVia) so its consumer never keeps such routes.
//   - Loss of notifications (ENOBUFS when the socket's receive buffer
//     overflows, or any other socket error) is recovered by reopening the
//     socket and dumping everything again: every current object is emitted,
//     and every object known before but absent now is emitted as deleted.
//
// The socket and the decoders are this package's own rather than
// vishvananda/netlink's per-kind subscriptions: those use one socket per
// kind (losing the link/route ordering above), hide the end of their
// ListExisting dump (so vanished objects cannot be swept), decode every
// route fully before any filter can run, and report AF_BRIDGE port
// messages as link deletions.
//
// Event fields: RouteChange is emitted once per nexthop of a multipath
// route; blackhole/unreachable/prohibit routes have no Gateway and Index
// 0. Routes are identified as the kernel does, by (table, dst, tos,
// metric) slot plus nexthops; rules by their whole message. When several
// kernel objects project onto the same event (two rules differing only in
// their source prefix), "added" is emitted for the first and "removed"
// when the last goes.
package netlinksrc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

// DefaultReceiveBufferSize is the socket receive buffer used when
// Options.ReceiveBufferSize is 0: large enough for a burst of several
// thousand route changes while the consumer is busy.
const DefaultReceiveBufferSize = 4 << 20

const (
	// initialReadBuffer holds any dump part (the kernel caps those at
	// 32 KiB) and ordinary notifications; it grows if a link message with
	// many VFs ever is larger.
	initialReadBuffer = 64 << 10
	maxReadBuffer     = 16 << 20
	// maxDumpRetries bounds the re-dumps of a kind whose dump the kernel
	// flagged NLM_F_DUMP_INTR (modified while being dumped) before the
	// session is restarted from scratch.
	maxDumpRetries = 5
	minBackoff     = 10 * time.Millisecond
	maxBackoff     = 2 * time.Second
)

// Options configures a Source.
type Options struct {
	// NetNS is the namespace to watch; netns.None() or 0 mean the
	// namespace of the calling process. The handle must stay open while
	// Run runs.
	NetNS netns.NsHandle
	// Now stamps events; default time.Now. It is called once per datagram
	// read from the kernel, as soon as it is read.
	Now func() time.Time
	// RouteFilter decides which IPv4 routes are reported (nil: all). It
	// is called for every route message, before anything is allocated,
	// so that a storm of changes in a table nobody watches costs little.
	RouteFilter func(table int, dst netip.Prefix) bool
	// RuleFilter decides which IPv4 rules are reported (nil: all).
	RuleFilter func(priority, table int) bool
	// ReceiveBufferSize of the netlink socket in bytes; default
	// DefaultReceiveBufferSize. The kernel doubles it for bookkeeping.
	ReceiveBufferSize int
	// Logger receives resync warnings and debug output; default discard.
	Logger *slog.Logger
}

// Source reports rtnetlink changes of one network namespace as events.
type Source struct {
	ns          netns.NsHandle
	now         func() time.Time
	routeFilter func(int, netip.Prefix) bool
	ruleFilter  func(int, int) bool
	rcvbuf      int
	log         *slog.Logger

	started    atomic.Bool
	resyncs    atomic.Uint64
	synced     chan struct{}
	syncedOnce sync.Once
}

// New returns a Source; it does nothing until Run.
func New(o Options) *Source {
	s := &Source{
		ns:          o.NetNS,
		now:         o.Now,
		routeFilter: o.RouteFilter,
		ruleFilter:  o.RuleFilter,
		rcvbuf:      o.ReceiveBufferSize,
		log:         o.Logger,
		synced:      make(chan struct{}),
	}
	if s.ns == 0 {
		s.ns = netns.None()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.rcvbuf <= 0 {
		s.rcvbuf = DefaultReceiveBufferSize
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// Resyncs returns how many times the source lost its subscription (receive
// buffer overrun or socket error) and recovered with a full dump. The
// initial dump is not counted.
func (s *Source) Resyncs() uint64 { return s.resyncs.Load() }

// Synced is closed once the initial state (every link, address, route and
// rule passing the filters) has been emitted.
func (s *Source) Synced() <-chan struct{} { return s.synced }

// Run subscribes, emits the current state, then emits changes until ctx is
// done. emit is called from Run's goroutine only, in kernel order; while it
// blocks nothing is read, so a consumer slower than the kernel causes a
// receive-buffer overrun, which Run recovers from with a full resync.
//
// Run never returns on transient errors: it reopens the socket, dumps again
// and emits current objects plus a Deleted event for each object that
// vanished meanwhile. It returns nil when ctx is done, or an error if the
// socket cannot be opened at all at start (bad namespace, no permission).
// Run may be called once per Source.
func (s *Source) Run(ctx context.Context, emit func(reactor.Event)) error {
	if emit == nil {
		return errors.New("netlinksrc: Run with nil emit")
	}
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("netlinksrc: Run called twice on one Source")
	}
	c, err := openConn(s.ns, s.rcvbuf)
	if err != nil {
		return fmt.Errorf("netlinksrc: %w", err)
	}
	t := newTracker(emit, s.routeFilter, s.ruleFilter, s.log)
	buf := make([]byte, initialReadBuffer)
	failures := 0
	for {
		completed, err := s.session(ctx, c, t, &buf)
		c.Close()
		if ctx.Err() != nil {
			return nil
		}
		if completed {
			failures = 0
		}
		failures++
		n := s.resyncs.Add(1)
		s.log.Warn("netlink subscription lost; resubscribing and resyncing", "err", err, "resyncs", n)
		for {
			// The first retry is immediate: an overrun is usually a
			// one-off burst. Repeated failures back off.
			if failures > 1 {
				d := min(minBackoff<<(failures-2), maxBackoff)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(d):
				}
			}
			c, err = openConn(s.ns, s.rcvbuf)
			if err == nil {
				break
			}
			failures++
			s.log.Error("netlink resubscribe failed", "err", err)
		}
	}
}

// session reads from c until an error; it starts with a full dump. It
// reports whether the dump completed, i.e. the session went live.
func (s *Source) session(ctx context.Context, c *conn, t *tracker, buf *[]byte) (live bool, err error) {
	stop := context.AfterFunc(ctx, c.Close)
	defer stop()

	t.beginResync()
	phase := kindLink
	retries := 0
	interrupted := false
	seq, err := c.requestDump(phase)
	if err != nil {
		return false, err
	}
	t.beginDump(phase)
	for {
		n, err := c.recv(*buf)
		if err != nil {
			if errors.Is(err, errTruncated) && len(*buf) < maxReadBuffer {
				*buf = make([]byte, 2*len(*buf))
			}
			return live, fmt.Errorf("receive: %w", err)
		}
		t.now = s.now()
		b := (*buf)[:n]
		for len(b) > 0 {
			var m nlmsg
			m, b, err = nextMessage(b)
			if err != nil {
				// The framing is broken: nothing after this point in
				// the datagram can be trusted, so treat it as lost.
				return live, fmt.Errorf("malformed datagram: %w", err)
			}
			if live || m.pid != c.pid || m.seq != seq {
				if err := t.handle(m, false); err != nil {
					s.log.Debug("skipping undecodable rtnetlink message", "type", m.typ, "err", err)
				}
				continue
			}
			switch m.typ {
			case unix.NLMSG_ERROR, unix.NLMSG_DONE:
				if errno := dumpErrno(m); errno != 0 {
					return live, fmt.Errorf("%s dump: %w", phase, errno)
				}
				if m.typ == unix.NLMSG_ERROR {
					continue // an ACK, not expected for a dump; harmless
				}
				if interrupted || m.flags&unix.NLM_F_DUMP_INTR != 0 {
					// The kernel changed the table while dumping it:
					// objects may be missing, so sweeping now could
					// report live objects deleted. Dump it again.
					retries++
					if retries > maxDumpRetries {
						return live, fmt.Errorf("%s dump interrupted %d times", phase, retries)
					}
					interrupted = false
					if seq, err = c.requestDump(phase); err != nil {
						return live, err
					}
					continue
				}
				t.endDump(phase)
				retries = 0
				phase++
				if phase == numKinds {
					live = true
					s.syncedOnce.Do(func() { close(s.synced) })
					continue
				}
				if seq, err = c.requestDump(phase); err != nil {
					return live, err
				}
				t.beginDump(phase)
			default:
				if m.flags&unix.NLM_F_DUMP_INTR != 0 {
					interrupted = true
				}
				if err := t.handle(m, true); err != nil {
					s.log.Debug("skipping undecodable rtnetlink dump message", "type", m.typ, "err", err)
				}
			}
		}
	}
}

// dumpErrno returns the error carried by an NLMSG_ERROR or NLMSG_DONE
// message (0 for success or when absent).
func dumpErrno(m nlmsg) syscall.Errno {
	if len(m.data) < 4 {
		return 0
	}
	if e := int32(binary.NativeEndian.Uint32(m.data[0:4])); e < 0 {
		return syscall.Errno(-e)
	}
	return 0
}

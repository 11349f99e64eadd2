// Package dhcp is wanreact's built-in DHCPv4 client, one per WAN with
// addressing: dhcp. It replaces dhclient and its hooks.
//
// The protocol lives in Machine, a pure state machine (RFC 2131 INIT,
// SELECTING, REQUESTING, BOUND, RENEWING, REBINDING, INIT-REBOOT) that takes
// time and packets as input and returns packets, lease changes and its next
// deadline. Client drives it: sockets, one timer, the lease file, and the
// bus events (reactor.LeaseChange) from which the reducer derives addresses
// and routes. The client itself never changes the kernel's addresses or
// routes.
//
// Sockets exist only while a transaction runs: an AF_PACKET socket with a
// BPF filter (UDP to port 68) for everything broadcast or before the address
// is usable, a UDP socket bound to the leased address for RENEWING. A bound
// client has no socket and one timer (T1), so it costs no CPU while idle.
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

// Options configures a Client.
type Options struct {
	WAN       string
	Interface string
	// LeaseDir holds <wan>.lease; empty disables persistence.
	LeaseDir string
	// Hostname is sent as option 12, ClientID as option 61 (verbatim,
	// type byte included); both are omitted when empty.
	Hostname string
	ClientID []byte
	// Release sends DHCPRELEASE when Run ends; otherwise the lease stays
	// stored and the address stays up across a restart.
	Release bool
	// NetNS is the namespace of Interface; 0 or netns.None() (-1) means
	// the caller's namespace.
	NetNS netns.NsHandle
	// Clock defaults to SystemClock, Rand to a randomly seeded generator
	// (it draws transaction IDs), Logger to a discarding one.
	Clock  Clock
	Rand   *rand.Rand
	Logger *slog.Logger
	// OnHook, if set, is called for every change that has a dhclient
	// reason, to run user hooks with HookEnv(old, new, reason). It is
	// called from Run's goroutine and must not block: the daemon's hook
	// runner queues the call and executes it asynchronously with a timeout.
	OnHook func(reason string, old, new *Lease)
}

// LeaseStatus is a snapshot for `wanreact status`.
type LeaseStatus struct {
	WAN       string        `json:"wan"`
	Interface string        `json:"interface"`
	State     string        `json:"state"`
	Address   netip.Prefix  `json:"address,omitzero"`
	Gateway   netip.Addr    `json:"gateway,omitzero"`
	Server    netip.Addr    `json:"server,omitzero"`
	Lease     time.Duration `json:"lease_ns,omitempty"`
	Acquired  time.Time     `json:"acquired,omitzero"`
	T1        time.Time     `json:"t1,omitzero"`
	T2        time.Time     `json:"t2,omitzero"`
	Expiry    time.Time     `json:"expiry,omitzero"`
}

// Client is the DHCPv4 client of one WAN.
type Client struct {
	o       Options
	log     *slog.Logger
	running atomic.Bool
	// sockets counts the driver's open sockets, so tests can check that
	// an idle (BOUND) client holds none.
	sockets atomic.Int32

	mu     sync.Mutex
	inputs []input
	status LeaseStatus
	wake   chan struct{}
}

type input int

const (
	inputLinkDown input = iota
	inputLinkUp
	inputRevalidate
)

// maxInputs bounds the queue of LinkChanged/Revalidate calls not yet
// handled; beyond it the oldest are dropped (the last state wins anyway).
const maxInputs = 32

// New validates the options.
func New(o Options) (*Client, error) {
	if o.WAN == "" || strings.ContainsAny(o.WAN, `/\`) || strings.HasPrefix(o.WAN, ".") {
		return nil, fmt.Errorf("dhcp: invalid WAN name %q", o.WAN)
	}
	if o.Interface == "" || len(o.Interface) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("dhcp %s: invalid interface name %q", o.WAN, o.Interface)
	}
	if cleanString(o.Hostname) != o.Hostname || len(o.Hostname) > maxStringOption {
		return nil, fmt.Errorf("dhcp %s: invalid hostname %q", o.WAN, o.Hostname)
	}
	if len(o.ClientID) > 255 {
		return nil, fmt.Errorf("dhcp %s: client id longer than 255 bytes", o.WAN)
	}
	if o.Clock == nil {
		o.Clock = SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		o:    o,
		log:  o.Logger.With("wan", o.WAN, "interface", o.Interface),
		wake: make(chan struct{}, 1),
	}
	c.status = LeaseStatus{WAN: o.WAN, Interface: o.Interface, State: StateLinkDown.String()}
	return c, nil
}

// LinkChanged forwards the interface's carrier state. Up after down starts
// INIT-REBOOT (lease held) or discovery. It never blocks.
func (c *Client) LinkChanged(up bool) {
	if up {
		c.push(inputLinkUp)
	} else {
		c.push(inputLinkDown)
	}
}

// Revalidate asks the client to confirm its lease now with INIT-REBOOT,
// e.g. after a Wi-Fi reassociation. It never blocks.
func (c *Client) Revalidate() { c.push(inputRevalidate) }

func (c *Client) push(in input) {
	c.mu.Lock()
	if len(c.inputs) >= maxInputs {
		c.inputs = c.inputs[1:]
	}
	c.inputs = append(c.inputs, in)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Status returns the current state and lease.
func (c *Client) Status() LeaseStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Run runs the client until ctx is done, calling emit (from this goroutine
// only) for every lease change. When ctx ends it releases the lease if
// configured (emitting "released") and returns nil.
func (c *Client) Run(ctx context.Context, emit func(reactor.Event)) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("dhcp: client already running")
	}
	defer c.running.Store(false)

	var h *netlink.Handle
	var err error
	if c.o.NetNS > 0 {
		h, err = netlink.NewHandleAt(c.o.NetNS)
	} else {
		h, err = netlink.NewHandle()
	}
	if err != nil {
		return fmt.Errorf("dhcp %s: netlink handle: %w", c.o.WAN, err)
	}
	defer h.Close()

	d := &driver{
		c:    c,
		h:    h,
		emit: emit,
		m: NewMachine(MachineConfig{
			WAN: c.o.WAN, Interface: c.o.Interface, Hostname: c.o.Hostname,
			ClientID: c.o.ClientID, Release: c.o.Release, Rand: c.o.Rand,
		}),
		recv: make(chan Inbound, 16),
	}
	defer d.closeSockets()

	link, linkErr := h.LinkByName(c.o.Interface)
	if linkErr != nil {
		link = nil
	}
	now := c.o.Clock.Now()
	d.apply(now, d.m.Start(now, d.loadLease(link)))
	if link != nil && carrier(link) {
		d.linkUp(now)
	} else {
		c.log.Info("dhcp waiting for carrier")
	}

	for {
		d.syncSockets()
		d.arm(d.m.Wakeup())
		c.publish(d.m)
		var timerC, pollC <-chan time.Time
		if d.timer != nil {
			timerC = d.timer.C()
		}
		if d.poll != nil {
			pollC = d.poll.C()
		}
		select {
		case <-ctx.Done():
			d.stopTimer()
			d.stopPoll()
			now := c.o.Clock.Now()
			d.apply(now, d.m.Stop(now))
			d.closeSockets()
			c.publish(d.m)
			return nil
		case <-c.wake:
			c.mu.Lock()
			ins := c.inputs
			c.inputs = nil
			c.mu.Unlock()
			for _, in := range ins {
				d.handleInput(in)
			}
		case <-pollC:
			d.poll = nil
			d.linkUp(c.o.Clock.Now())
		case <-timerC:
			d.timer, d.timerAt = nil, time.Time{}
			now := c.o.Clock.Now()
			d.apply(now, d.m.Timer(now))
		case in := <-d.recv:
			now := c.o.Clock.Now()
			out := d.m.Receive(now, in)
			if out.Ignored != "" {
				c.log.Debug("dhcp packet ignored", "type", in.Packet.MessageType().String(), "from", in.SrcIP, "why", out.Ignored)
			}
			d.apply(now, out)
		}
	}
}

func (c *Client) publish(m *Machine) {
	s := LeaseStatus{WAN: c.o.WAN, Interface: c.o.Interface, State: m.State().String()}
	if l := m.Lease(); l != nil {
		s.Address, s.Gateway, s.Server = l.Address, l.Gateway(), l.Server
		s.Lease, s.Acquired = l.Duration, l.Acquired
		s.T1, s.T2, s.Expiry = l.RenewAt(), l.RebindAt(), l.Expiry()
	}
	c.mu.Lock()
	c.status = s
	c.mu.Unlock()
}

func carrier(l netlink.Link) bool {
	a := l.Attrs()
	return a.Flags&net.FlagUp != 0 && a.RawFlags&unix.IFF_LOWER_UP != 0
}

// operReady reports whether the kernel will transmit on the link. Carrier
// (IFF_LOWER_UP) is set before the kernel's linkwatch work attaches the
// real qdisc and sets IF_OPER_UP; a packet sent in between is silently
// dropped, which would cost the first DISCOVER and a whole retry interval.
// UNKNOWN is accepted for drivers that never report an operational state.
func operReady(l netlink.Link) bool {
	st := l.Attrs().OperState
	return carrier(l) && (st == netlink.OperUp || st == netlink.OperUnknown)
}

// Link-up readiness polling: at most linkReadyWait in steps of linkPoll.
const (
	linkReadyWait = time.Second
	linkPoll      = 10 * time.Millisecond
)

// driver is Run's state: the machine and the I/O around it. Only Run's
// goroutine touches it.
type driver struct {
	c       *Client
	h       *netlink.Handle
	m       *Machine
	emit    func(reactor.Event)
	timer   Timer
	timerAt time.Time
	// poll and upSince: a link-up waiting for the kernel to be ready.
	poll    Timer
	upSince time.Time

	raw     *rawConn
	udp     *net.UDPConn
	udpAddr netip.Addr
	recv    chan Inbound
	readers sync.WaitGroup
	stop    chan struct{} // closed to stop the readers of the current sockets
}

func (d *driver) handleInput(in input) {
	now := d.c.o.Clock.Now()
	switch in {
	case inputLinkDown:
		d.c.log.Info("dhcp carrier lost", "state", d.m.State().String())
		d.stopPoll()
		d.upSince = time.Time{}
		d.apply(now, d.m.LinkDown(now))
	case inputLinkUp:
		if d.m.State() == StateLinkDown && d.upSince.IsZero() {
			d.linkUp(now)
		}
	case inputRevalidate:
		d.apply(now, d.m.Revalidate(now))
	}
}

// linkUp tells the machine about carrier once the kernel can transmit,
// polling the link for up to linkReadyWait; after that it goes ahead
// anyway (the retransmissions cover a late link).
func (d *driver) linkUp(now time.Time) {
	if d.upSince.IsZero() {
		d.upSince = now
	}
	var hw net.HardwareAddr
	l, err := d.h.LinkByName(d.c.o.Interface)
	if err != nil {
		d.c.log.Warn("dhcp link lookup failed", "err", err)
	} else {
		hw = l.Attrs().HardwareAddr
		if !operReady(l) && now.Sub(d.upSince) < linkReadyWait {
			d.stopPoll()
			d.poll = d.c.o.Clock.NewTimer(linkPoll)
			return
		}
	}
	d.upSince = time.Time{}
	d.apply(now, d.m.LinkUp(now, hw))
}

func (d *driver) stopPoll() {
	if d.poll != nil {
		d.poll.Stop()
		d.poll = nil
	}
}

// loadLease reads the stored lease, discarding it if it was obtained by
// another interface or MAC.
func (d *driver) loadLease(link netlink.Link) *Lease {
	o := d.c.o
	if o.LeaseDir == "" {
		return nil
	}
	l, err := LoadLease(o.LeaseDir, o.WAN)
	if err != nil {
		d.c.log.Warn("dhcp stored lease unusable", "err", err)
		return nil
	}
	if l == nil {
		return nil
	}
	if l.WAN != o.WAN || l.Interface != o.Interface ||
		(link != nil && l.HWAddr != "" && l.HWAddr != link.Attrs().HardwareAddr.String()) {
		d.c.log.Info("dhcp stored lease belongs to another interface; ignored", "lease_interface", l.Interface, "lease_hwaddr", l.HWAddr)
		return nil
	}
	return l
}

// apply carries out an Output: send, persist, then publish. The lease
// file is written before the event goes out, so that once the reducer has
// put an address on the interface a crash cannot lose the lease behind it.
func (d *driver) apply(now time.Time, out Output) {
	for _, t := range out.Send {
		if err := d.send(t); err != nil {
			d.c.log.Warn("dhcp send failed", "type", t.Packet.MessageType().String(), "err", err)
		} else {
			d.c.log.Debug("dhcp sent", "type", t.Packet.MessageType().String(), "dst", t.Dst, "state", d.m.State().String())
		}
	}
	if d.c.o.LeaseDir != "" {
		if out.Store != nil {
			if err := StoreLease(d.c.o.LeaseDir, out.Store); err != nil {
				d.c.log.Error("dhcp lease not stored", "err", err)
			}
		} else if out.Forget {
			if err := RemoveLease(d.c.o.LeaseDir, d.c.o.WAN); err != nil {
				d.c.log.Error("dhcp lease not removed", "err", err)
			}
		}
	}
	for _, ch := range out.Changes {
		if ch.Kind != "" {
			l := ch.New
			if l == nil {
				l = ch.Old
			}
			d.c.log.Info("dhcp lease "+ch.Kind, "address", l.Address, "gateway", l.Gateway(), "server", l.Server, "expiry", l.Expiry())
			if d.emit != nil {
				d.emit(reactor.Event{Time: now, WAN: d.c.o.WAN, Data: l.LeaseChange(ch.Kind)})
			}
		}
		if ch.Reason != "" && d.c.o.OnHook != nil {
			d.c.o.OnHook(ch.Reason, ch.Old, ch.New)
		}
	}
}

// send picks the socket: broadcasts go through the raw socket, unicasts
// through the UDP socket and, should the kernel be unable to send them (no
// address or route yet), through the raw socket to the server's MAC.
func (d *driver) send(t Transmit) error {
	payload := t.Packet.ToBytes()
	if !t.Broadcast() {
		err := d.ensureUDP(t.Src)
		if err == nil {
			_, err = d.udp.WriteToUDPAddrPort(payload, netip.AddrPortFrom(t.Dst, serverPort))
			if err == nil {
				return nil
			}
		}
		d.c.log.Debug("dhcp unicast via kernel failed; using raw socket", "err", err)
	}
	if err := d.ensureRaw(); err != nil {
		return err
	}
	return d.raw.send(payload, t.Src, t.Dst, t.DstHW)
}

func (d *driver) ensureRaw() error {
	if d.raw != nil {
		return nil
	}
	link, err := d.h.LinkByName(d.c.o.Interface)
	if err != nil {
		return fmt.Errorf("link %s: %w", d.c.o.Interface, err)
	}
	var rc *rawConn
	err = inNetNS(d.c.o.NetNS, func() (err error) {
		rc, err = openRaw(link.Attrs().Index)
		return err
	})
	if err != nil {
		return err
	}
	d.raw = rc
	d.c.sockets.Add(1)
	d.startReader(func(buf []byte) (Inbound, error) {
		payload, src, hw, err := rc.recv(buf)
		if err != nil {
			return Inbound{}, err
		}
		return decodeInbound(payload, src, hw)
	})
	return nil
}

func (d *driver) ensureUDP(src netip.Addr) error {
	if d.udp != nil && d.udpAddr == src {
		return nil
	}
	d.closeUDP()
	var uc *net.UDPConn
	err := inNetNS(d.c.o.NetNS, func() (err error) {
		uc, err = openUnicast(d.c.o.Interface, src)
		return err
	})
	if err != nil {
		return err
	}
	d.udp, d.udpAddr = uc, src
	d.c.sockets.Add(1)
	d.startReader(func(buf []byte) (Inbound, error) {
		n, from, err := uc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return Inbound{}, err
		}
		return decodeInbound(buf[:n], from.Addr().Unmap(), nil)
	})
	return nil
}

// errSkip marks a datagram that is not DHCP; the reader goes on.
var errSkip = errors.New("not a dhcp packet")

func decodeInbound(payload []byte, src netip.Addr, hw net.HardwareAddr) (Inbound, error) {
	p, err := dhcpv4.FromBytes(payload)
	if err != nil {
		return Inbound{}, errSkip
	}
	return Inbound{Packet: p, SrcIP: src, SrcHW: hw}, nil
}

// startReader runs read in a goroutine until its socket is closed,
// forwarding packets to Run's loop.
func (d *driver) startReader(read func([]byte) (Inbound, error)) {
	if d.stop == nil {
		d.stop = make(chan struct{})
	}
	stop := d.stop
	d.readers.Add(1)
	go func() {
		defer d.readers.Done()
		buf := make([]byte, 65536)
		for {
			in, err := read(buf)
			if errors.Is(err, errSkip) {
				continue
			}
			if err != nil {
				select {
				case <-stop: // closed by closeSockets
				default:
					if !errClosed(err) {
						d.c.log.Warn("dhcp receive failed", "err", err)
					}
				}
				return
			}
			select {
			case d.recv <- in:
			case <-stop:
				return
			}
		}
	}()
}

// syncSockets closes whatever the current state does not need.
func (d *driver) syncSockets() {
	switch d.m.Transport() {
	case TransportNone:
		d.closeSockets()
	case TransportRaw:
		d.closeUDP()
	case TransportUnicast:
		// The raw socket stays open if a unicast had to fall back to it:
		// the answer then arrives there.
	}
}

func (d *driver) closeSockets() {
	if d.raw == nil && d.udp == nil {
		return
	}
	if d.stop != nil {
		close(d.stop)
		d.stop = nil
	}
	if d.raw != nil {
		d.raw.Close()
		d.raw = nil
		d.c.sockets.Add(-1)
	}
	d.closeUDP()
	d.readers.Wait()
}

// closeUDP closes the RENEWING socket; its reader ends on the close error.
func (d *driver) closeUDP() {
	if d.udp != nil {
		d.udp.Close()
		d.udp = nil
		d.c.sockets.Add(-1)
	}
}

// arm sets the single timer to the machine's next deadline.
func (d *driver) arm(at time.Time) {
	if at.Equal(d.timerAt) && (d.timer != nil || at.IsZero()) {
		return
	}
	d.stopTimer()
	if at.IsZero() {
		return
	}
	d.timer = d.c.o.Clock.NewTimer(at.Sub(d.c.o.Clock.Now()))
	d.timerAt = at
}

func (d *driver) stopTimer() {
	if d.timer != nil {
		d.timer.Stop()
	}
	d.timer, d.timerAt = nil, time.Time{}
}

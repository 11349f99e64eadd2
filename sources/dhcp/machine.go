package dhcp

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// State is a DHCP client state of RFC 2131 figure 5, plus LINK-DOWN.
type State int

const (
	// StateLinkDown: no carrier (or not started). No transaction runs; a
	// held lease is kept until it expires, so a short outage costs nothing.
	StateLinkDown State = iota
	// StateInit: waiting before DISCOVER, only after repeated NAKs of
	// fresh offers (a server that offers then refuses would otherwise make
	// the client loop at full speed).
	StateInit
	StateSelecting
	StateRequesting
	// StateInitReboot covers RFC INIT-REBOOT and REBOOTING: a DHCPREQUEST
	// for the held lease's address is broadcast, awaiting ACK or NAK.
	StateInitReboot
	StateBound
	StateRenewing
	StateRebinding
)

var stateNames = [...]string{"LINK-DOWN", "INIT", "SELECTING", "REQUESTING", "INIT-REBOOT", "BOUND", "RENEWING", "REBINDING"}

func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return "UNKNOWN"
	}
	return stateNames[s]
}

// Transport is the socket a state needs. The driver opens exactly that and
// closes everything else, so BOUND and LINK-DOWN hold no socket at all.
type Transport int

const (
	TransportNone Transport = iota
	// TransportRaw is the AF_PACKET socket: everything before the address
	// is usable, and broadcasts.
	TransportRaw
	// TransportUnicast is a UDP socket bound to the leased address (RENEWING).
	TransportUnicast
)

// Retransmission policy. RFC 2131 4.1 asks for 4 s, 8 s, ... 64 s with
// ±1 s of randomisation. A router wants its uplink back within a second of
// carrier, and the first DISCOVER after link-up is the one most often lost
// (switch port still learning, modem still booting), so the first retry
// comes after 1 s and doubles from there (1, 2, 4, ... 64 s), with jitter of
// ±min(1 s, delay/4) so that it never drops to zero.
const (
	firstRetry = 1 * time.Second
	maxRetry   = 64 * time.Second
	// requestAttempts bounds REQUESTING and INIT-REBOOT (1+2+4+8 s) before
	// falling back to DISCOVER, respectively to the held lease.
	requestAttempts = 4
	// minRenewRetry is RFC 2131 4.4.5's floor for RENEWING/REBINDING
	// retransmissions.
	minRenewRetry = 60 * time.Second
	// failAfter is how long acquisition runs without a lease before the
	// FAIL hook fires (dhclient's default timeout).
	failAfter = 60 * time.Second
)

// requestedOptions is the parameter request list (option 55).
var requestedOptions = []dhcpv4.OptionCode{
	dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
	dhcpv4.OptionHostName, dhcpv4.OptionDomainName, dhcpv4.OptionInterfaceMTU,
	dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionServerIdentifier,
	dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue,
	dhcpv4.OptionClasslessStaticRoute,
}

// MachineConfig holds what the machine puts into packets and leases.
type MachineConfig struct {
	WAN, Interface string
	Hostname       string
	ClientID       []byte
	// Release sends DHCPRELEASE on Stop.
	Release bool
	// Rand draws transaction IDs and jitter; nil uses a random seed.
	Rand *rand.Rand
}

// Inbound is one received DHCP packet with its link and IP sources.
type Inbound struct {
	Packet *dhcpv4.DHCPv4
	SrcIP  netip.Addr
	SrcHW  net.HardwareAddr
}

// Transmit is one packet to send. A zero Dst means broadcast through the
// raw socket (with IP source Src, 0.0.0.0 before an address is held);
// otherwise it is a unicast from Src to Dst:67 (DstHW is the link address to
// use should the driver have to fall back to the raw socket).
type Transmit struct {
	Packet *dhcpv4.DHCPv4
	Src    netip.Addr
	Dst    netip.Addr
	DstHW  net.HardwareAddr
}

// Broadcast reports whether the packet goes to 255.255.255.255.
func (t Transmit) Broadcast() bool { return !t.Dst.IsValid() }

// Change is a lease change. Kind (bound, renewed, expired, nak, released)
// becomes a reactor.LeaseChange when set; Reason (BOUND, RENEW, REBIND,
// REBOOT, EXPIRE, FAIL, RELEASE) is the dhclient reason for user hooks when
// set. Old is the lease held before, New the one held after.
type Change struct {
	Kind   string
	Reason string
	Old    *Lease
	New    *Lease
}

// Output is what one input produced, in order: send Send, then publish
// Changes, then persist (Store, or remove the file if Forget).
type Output struct {
	Send    []Transmit
	Changes []Change
	Store   *Lease
	Forget  bool
	// Ignored says why an input was dropped, for debug logs.
	Ignored string
}

// Machine is the pure DHCPv4 client state machine of one interface. It
// performs no I/O and reads no clock: every input carries the current time
// and every output says what to send, publish and persist, and Wakeup says
// when to call Timer next. Not safe for concurrent use.
type Machine struct {
	cfg   MachineConfig
	rng   *rand.Rand
	hw    net.HardwareAddr
	state State
	lease *Lease
	// hint is the address of an expired or lost lease, asked for again in
	// DISCOVER (option 50) so that the ISP tends to hand it back.
	hint netip.Addr

	// The running transaction.
	xid      dhcpv4.TransactionID
	txStart  time.Time // for the secs field
	sentAt   time.Time // first transmission of the current message
	attempts int
	retryAt  time.Time
	last     Transmit
	offer    *Lease // the lease requested in REQUESTING
	initAt   time.Time
	naks     int // consecutive NAKs of fresh offers

	acquireStart time.Time // start of acquisition without a lease (FAIL hook)
	failed       bool
}

// NewMachine returns a machine in LINK-DOWN without a lease.
func NewMachine(cfg MachineConfig) *Machine {
	r := cfg.Rand
	if r == nil {
		r = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &Machine{cfg: cfg, rng: r}
}

// State is the current state.
func (m *Machine) State() State { return m.state }

// Lease is the lease held (in use by the host), nil if none. The caller
// must not modify it.
func (m *Machine) Lease() *Lease { return m.lease }

// Transport is the socket the current state needs.
func (m *Machine) Transport() Transport {
	switch m.state {
	case StateSelecting, StateRequesting, StateInitReboot, StateRebinding:
		return TransportRaw
	case StateRenewing:
		return TransportUnicast
	}
	return TransportNone
}

// Wakeup is when Timer must be called next; zero means never.
func (m *Machine) Wakeup() time.Time {
	var w time.Time
	add := func(t time.Time) {
		if !t.IsZero() && (w.IsZero() || t.Before(w)) {
			w = t
		}
	}
	if m.lease != nil {
		add(m.lease.Expiry())
	}
	switch m.state {
	case StateInit:
		add(m.initAt)
	case StateSelecting, StateRequesting, StateInitReboot:
		add(m.retryAt)
		if m.state == StateSelecting && !m.failed && m.lease == nil && !m.acquireStart.IsZero() {
			add(m.acquireStart.Add(failAfter))
		}
	case StateBound:
		add(m.lease.RenewAt())
	case StateRenewing:
		add(m.retryAt)
		add(m.lease.RebindAt())
	case StateRebinding:
		add(m.retryAt)
	}
	return w
}

// Start loads a stored lease. An unexpired one is reported as "bound" at
// once, so that a daemon restart keeps the address; the first LinkUp then
// confirms it with INIT-REBOOT.
func (m *Machine) Start(now time.Time, stored *Lease) Output {
	var out Output
	if stored == nil {
		return out
	}
	if !now.Before(stored.Expiry()) {
		m.hint = stored.Address.Addr()
		out.Forget = true
		return out
	}
	m.lease = stored
	// No Reason: nothing was negotiated, so user hooks (which saw this
	// lease when it was obtained) are not run again until the server
	// confirms it (REBOOT).
	out.Changes = append(out.Changes, Change{Kind: "bound", New: stored})
	return out
}

// LinkUp reports carrier (again). With a lease still valid the client
// confirms it by INIT-REBOOT, otherwise it starts discovery.
func (m *Machine) LinkUp(now time.Time, hw net.HardwareAddr) Output {
	if len(hw) > 0 {
		m.hw = append(net.HardwareAddr(nil), hw...)
	}
	if m.state != StateLinkDown {
		return Output{Ignored: "link already up"}
	}
	var out Output
	m.restart(now, &out)
	return out
}

// LinkDown reports carrier loss: the transaction stops, the lease is kept
// until it expires.
func (m *Machine) LinkDown(now time.Time) Output {
	m.state = StateLinkDown
	m.retryAt = time.Time{}
	m.offer = nil
	// Time without carrier does not count towards FAIL.
	m.acquireStart = time.Time{}
	m.failed = false
	return Output{}
}

// Revalidate asks to confirm the lease now (INIT-REBOOT), e.g. after a
// Wi-Fi reassociation that may have moved the host to another network.
// Without a lease it restarts discovery with the fast retry schedule.
func (m *Machine) Revalidate(now time.Time) Output {
	if m.state == StateLinkDown {
		return Output{Ignored: "link down"}
	}
	var out Output
	m.restart(now, &out)
	return out
}

// Stop ends the client: with Release configured and a lease held, it sends
// DHCPRELEASE and reports "released"; otherwise the lease stays stored for
// the next start.
func (m *Machine) Stop(now time.Time) Output {
	var out Output
	l := m.lease
	m.state = StateLinkDown
	m.retryAt = time.Time{}
	if l == nil || !m.cfg.Release {
		return out
	}
	p := m.newPacket(dhcpv4.MessageTypeRelease, m.newXID())
	p.ClientIPAddr = l.Address.Addr().AsSlice()
	p.UpdateOption(dhcpv4.OptServerIdentifier(l.Server.AsSlice()))
	out.Send = append(out.Send, Transmit{Packet: p, Src: l.Address.Addr(), Dst: l.Server, DstHW: parseHW(l.ServerHWAddr)})
	m.lease = nil
	out.Changes = append(out.Changes, Change{Kind: "released", Reason: "RELEASE", Old: l})
	out.Forget = true
	return out
}

// Timer handles every deadline that has passed by now.
func (m *Machine) Timer(now time.Time) Output {
	var out Output
	if m.lease != nil && !now.Before(m.lease.Expiry()) {
		old := m.lease
		m.lease = nil
		m.hint = old.Address.Addr()
		out.Changes = append(out.Changes, Change{Kind: "expired", Reason: "EXPIRE", Old: old})
		out.Forget = true
		if m.state != StateLinkDown {
			m.startDiscovery(now, &out)
		}
		return out
	}
	switch m.state {
	case StateInit:
		if !now.Before(m.initAt) {
			m.startDiscovery(now, &out)
		}
	case StateSelecting:
		if !m.failed && m.lease == nil && !m.acquireStart.IsZero() && !now.Before(m.acquireStart.Add(failAfter)) {
			m.failed = true
			out.Changes = append(out.Changes, Change{Reason: "FAIL"})
		}
		if !now.Before(m.retryAt) {
			m.retransmit(now, &out, m.backoff(m.attempts))
		}
	case StateRequesting:
		if !now.Before(m.retryAt) {
			if m.attempts >= requestAttempts {
				m.startDiscovery(now, &out)
			} else {
				m.retransmit(now, &out, m.backoff(m.attempts))
			}
		}
	case StateInitReboot:
		if !now.Before(m.retryAt) {
			if m.attempts >= requestAttempts {
				// RFC 2131 3.2: without an answer the client may keep
				// using the unexpired lease; it renews at T1 as usual.
				m.resumeLease(now, &out)
			} else {
				m.retransmit(now, &out, m.backoff(m.attempts))
			}
		}
	case StateBound:
		if !now.Before(m.lease.RenewAt()) {
			m.resumeLease(now, &out)
		}
	case StateRenewing:
		if !now.Before(m.lease.RebindAt()) {
			m.startRebinding(now, &out)
		} else if !now.Before(m.retryAt) {
			m.retransmit(now, &out, renewRetry(now, m.lease.RebindAt()))
		}
	case StateRebinding:
		if !now.Before(m.retryAt) {
			m.retransmit(now, &out, renewRetry(now, m.lease.Expiry()))
		}
	}
	return out
}

// Receive handles one received packet.
func (m *Machine) Receive(now time.Time, in Inbound) Output {
	p := in.Packet
	switch {
	case p == nil:
		return Output{Ignored: "no packet"}
	case p.OpCode != dhcpv4.OpcodeBootReply:
		return Output{Ignored: "not a reply"}
	case m.Transport() == TransportNone:
		return Output{Ignored: "no transaction in " + m.state.String()}
	case p.TransactionID != m.xid:
		return Output{Ignored: "foreign xid"}
	case len(m.hw) > 0 && (len(p.ClientHWAddr) < len(m.hw) || string(p.ClientHWAddr[:len(m.hw)]) != string(m.hw)):
		return Output{Ignored: "foreign chaddr"}
	}
	switch p.MessageType() {
	case dhcpv4.MessageTypeOffer:
		return m.receiveOffer(now, in)
	case dhcpv4.MessageTypeAck:
		return m.receiveAck(now, in)
	case dhcpv4.MessageTypeNak:
		return m.receiveNak(now, in)
	}
	return Output{Ignored: "message type " + p.MessageType().String()}
}

func (m *Machine) receiveOffer(now time.Time, in Inbound) Output {
	if m.state != StateSelecting {
		return Output{Ignored: "offer in " + m.state.String()}
	}
	offer, err := leaseFromAck(in.Packet, in.SrcIP)
	if err != nil {
		return Output{Ignored: "bad offer: " + err.Error()}
	}
	// The first acceptable offer wins: waiting for more only delays the
	// uplink, and RFC 2131 leaves the choice to the client.
	var out Output
	m.offer = offer
	m.state = StateRequesting
	p := m.newPacket(dhcpv4.MessageTypeRequest, m.xid)
	p.UpdateOption(dhcpv4.OptRequestedIPAddress(offer.Address.Addr().AsSlice()))
	p.UpdateOption(dhcpv4.OptServerIdentifier(offer.Server.AsSlice()))
	m.send(now, &out, Transmit{Packet: p}, true)
	return out
}

func (m *Machine) receiveAck(now time.Time, in Inbound) Output {
	switch m.state {
	case StateRequesting, StateInitReboot, StateRenewing, StateRebinding:
	default:
		return Output{Ignored: "ack in " + m.state.String()}
	}
	if m.state == StateRequesting && !m.fromSelected(in.Packet) {
		return Output{Ignored: "ack from a server not selected"}
	}
	l, err := leaseFromAck(in.Packet, in.SrcIP)
	if err != nil {
		return Output{Ignored: "bad ack: " + err.Error()}
	}
	l.WAN, l.Interface, l.HWAddr = m.cfg.WAN, m.cfg.Interface, m.hw.String()
	l.ServerHWAddr = in.SrcHW.String()
	l.Acquired = m.sentAt

	var out Output
	old := m.lease
	ch := Change{Kind: "bound", Old: old, New: l}
	switch m.state {
	case StateRequesting:
		ch.Reason = "BOUND"
	case StateInitReboot:
		ch.Reason = "REBOOT"
	case StateRenewing:
		ch.Reason = "RENEW"
	case StateRebinding:
		ch.Reason = "REBIND"
	}
	if m.state != StateInitReboot && l.sameBinding(old) {
		ch.Kind = "renewed"
	}
	m.lease = l
	m.state = StateBound
	m.retryAt = time.Time{}
	m.offer = nil
	m.naks = 0
	m.failed = false
	m.acquireStart = time.Time{}
	out.Changes = append(out.Changes, ch)
	out.Store = l
	return out
}

func (m *Machine) receiveNak(now time.Time, in Inbound) Output {
	switch m.state {
	case StateRequesting:
		if !m.fromSelected(in.Packet) {
			return Output{Ignored: "nak from a server not selected"}
		}
	case StateRenewing:
		// The REQUEST went to one server; only it may refuse it.
		if sid := ipOption(in.Packet.Options.Get(dhcpv4.OptionServerIdentifier)); sid.IsValid() && sid != m.lease.Server {
			return Output{Ignored: "nak from another server"}
		}
	case StateInitReboot, StateRebinding:
	default:
		return Output{Ignored: "nak in " + m.state.String()}
	}
	var out Output
	if m.state == StateRequesting {
		m.naks++
	}
	if old := m.lease; old != nil {
		m.lease = nil
		m.hint = netip.Addr{} // the server said no to it
		out.Changes = append(out.Changes, Change{Kind: "nak", Reason: "EXPIRE", Old: old})
		out.Forget = true
	}
	if m.naks > 1 {
		m.state = StateInit
		m.initAt = now.Add(m.backoff(m.naks - 2))
		m.retryAt = time.Time{}
		return out
	}
	m.startDiscovery(now, &out)
	return out
}

// fromSelected reports whether a reply in REQUESTING comes from the server
// whose offer was requested (others may answer a broadcast REQUEST too).
func (m *Machine) fromSelected(p *dhcpv4.DHCPv4) bool {
	sid := ipOption(p.Options.Get(dhcpv4.OptionServerIdentifier))
	return !sid.IsValid() || m.offer == nil || sid == m.offer.Server
}

// restart begins a new exchange after link-up or a revalidation request.
func (m *Machine) restart(now time.Time, out *Output) {
	if m.lease != nil {
		m.state = StateInitReboot
		m.xid = m.newXID()
		m.txStart = now
		m.attempts = 0
		p := m.newPacket(dhcpv4.MessageTypeRequest, m.xid)
		p.UpdateOption(dhcpv4.OptRequestedIPAddress(m.lease.Address.Addr().AsSlice()))
		m.send(now, out, Transmit{Packet: p}, true)
		return
	}
	m.startDiscovery(now, out)
}

func (m *Machine) startDiscovery(now time.Time, out *Output) {
	m.state = StateSelecting
	m.offer = nil
	m.xid = m.newXID()
	m.txStart = now
	m.attempts = 0
	if m.lease == nil && m.acquireStart.IsZero() {
		m.acquireStart = now
	}
	p := m.newPacket(dhcpv4.MessageTypeDiscover, m.xid)
	if m.hint.IsValid() {
		p.UpdateOption(dhcpv4.OptRequestedIPAddress(m.hint.AsSlice()))
	}
	m.send(now, out, Transmit{Packet: p}, true)
}

// resumeLease enters the state the held lease's timers call for: BOUND
// before T1, RENEWING before T2, REBINDING after.
func (m *Machine) resumeLease(now time.Time, out *Output) {
	l := m.lease
	switch {
	case now.Before(l.RenewAt()):
		m.state = StateBound
		m.retryAt = time.Time{}
	case now.Before(l.RebindAt()):
		m.state = StateRenewing
		m.xid = m.newXID()
		m.txStart = now
		m.attempts = 0
		p := m.newPacket(dhcpv4.MessageTypeRequest, m.xid)
		p.ClientIPAddr = l.Address.Addr().AsSlice()
		m.send(now, out, Transmit{Packet: p, Src: l.Address.Addr(), Dst: l.Server, DstHW: parseHW(l.ServerHWAddr)}, false)
		m.retryAt = now.Add(renewRetry(now, l.RebindAt()))
	default:
		m.startRebinding(now, out)
	}
}

func (m *Machine) startRebinding(now time.Time, out *Output) {
	l := m.lease
	m.state = StateRebinding
	m.xid = m.newXID()
	m.txStart = now
	m.attempts = 0
	p := m.newPacket(dhcpv4.MessageTypeRequest, m.xid)
	p.ClientIPAddr = l.Address.Addr().AsSlice()
	m.send(now, out, Transmit{Packet: p, Src: l.Address.Addr()}, false)
	m.retryAt = now.Add(renewRetry(now, l.Expiry()))
}

// send transmits a new message of the running transaction. fastRetry arms
// the acquisition backoff; RENEWING/REBINDING set retryAt themselves.
func (m *Machine) send(now time.Time, out *Output, t Transmit, fastRetry bool) {
	m.sentAt = now
	m.attempts = 1
	m.last = t
	out.Send = append(out.Send, t)
	if fastRetry {
		m.retryAt = now.Add(m.backoff(0))
	}
}

// retransmit resends the last message (same xid, RFC 2131 4.1) with the
// elapsed-seconds field updated, and arms the next retry after delay.
func (m *Machine) retransmit(now time.Time, out *Output, delay time.Duration) {
	p := *m.last.Packet
	p.NumSeconds = secsSince(m.txStart, now)
	t := m.last
	t.Packet = &p
	m.attempts++
	out.Send = append(out.Send, t)
	m.retryAt = now.Add(delay)
}

// backoff is the delay after transmission number n+1 (n from 0): 1, 2, 4,
// ... 64 s with jitter of ±min(1 s, delay/4).
func (m *Machine) backoff(n int) time.Duration {
	d := maxRetry
	if n < 7 {
		d = min(firstRetry<<n, maxRetry)
	}
	j := min(time.Second, d/4)
	return d - j + time.Duration(m.rng.Int64N(int64(2*j)+1))
}

// renewRetry is RFC 2131 4.4.5: half the time left until deadline, at
// least 60 s; it may exceed the deadline, whose own timer then wins.
func renewRetry(now, deadline time.Time) time.Duration {
	return max(deadline.Sub(now)/2, minRenewRetry)
}

func secsSince(start, now time.Time) uint16 {
	s := now.Sub(start) / time.Second
	if s < 0 {
		return 0
	}
	return uint16(min(s, 0xffff))
}

func (m *Machine) newXID() dhcpv4.TransactionID {
	var x dhcpv4.TransactionID
	v := m.rng.Uint32()
	x[0], x[1], x[2], x[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	return x
}

// newPacket builds a client message with the options every message of
// this client carries.
func (m *Machine) newPacket(t dhcpv4.MessageType, xid dhcpv4.TransactionID) *dhcpv4.DHCPv4 {
	hw := m.hw
	if len(hw) == 0 {
		hw = make(net.HardwareAddr, 6)
	}
	p := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootRequest,
		HWType:        iana.HWTypeEthernet,
		TransactionID: xid,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		ClientHWAddr:  append(net.HardwareAddr(nil), hw...),
		Options:       make(dhcpv4.Options),
	}
	p.UpdateOption(dhcpv4.OptMessageType(t))
	if len(m.cfg.ClientID) > 0 {
		p.UpdateOption(dhcpv4.OptClientIdentifier(m.cfg.ClientID))
	}
	if t == dhcpv4.MessageTypeRelease {
		return p
	}
	if m.cfg.Hostname != "" {
		p.UpdateOption(dhcpv4.OptHostName(m.cfg.Hostname))
	}
	p.UpdateOption(dhcpv4.OptParameterRequestList(requestedOptions...))
	// 1500-byte MTU minus IP and UDP headers: lets a server send a long
	// option 121 without exceeding one unfragmented frame (the raw socket
	// does not reassemble fragments).
	p.UpdateOption(dhcpv4.OptMaxMessageSize(1472))
	return p
}

func parseHW(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return nil
	}
	return hw
}

package dhcp

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// fakeServer answers the machine's packets like an RFC 2131 server with a
// single address for the client. Knobs switch it off, make it refuse, or
// make it hand out another address.
type fakeServer struct {
	id     netip.Addr
	hw     net.HardwareAddr
	addr   netip.Prefix
	lease  time.Duration
	router netip.Addr
	extra  []dhcpv4.Option

	down       bool // answers nothing
	nakRequest bool // NAKs every DHCPREQUEST
	silentReq  bool // answers DISCOVER only
	received   []*dhcpv4.DHCPv4
}

func newFakeServer(id, addr string) *fakeServer {
	a := netip.MustParseAddr(id).As4()
	return &fakeServer{
		id:     netip.MustParseAddr(id),
		hw:     net.HardwareAddr{0x02, 0, a[0], a[1], a[2], a[3]},
		addr:   netip.MustParsePrefix(addr),
		lease:  time.Hour,
		router: netip.MustParseAddr(id),
	}
}

// handle returns the server's answer to t, if any. Broadcasts reach every
// server; unicasts only the addressed one.
func (s *fakeServer) handle(t Transmit) *Inbound {
	if s.down || (!t.Broadcast() && t.Dst != s.id) {
		return nil
	}
	// Go through the wire format so that encoding bugs show up here.
	q, err := dhcpv4.FromBytes(t.Packet.ToBytes())
	if err != nil {
		panic(err)
	}
	s.received = append(s.received, q)
	var typ dhcpv4.MessageType
	switch q.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		if sid := q.ServerIdentifier(); sid != nil && !sid.Equal(s.id.AsSlice()) {
			return nil // the client chose another server
		}
		if s.silentReq {
			return nil
		}
		typ = dhcpv4.MessageTypeAck
		req := q.RequestedIPAddress()
		if req == nil {
			req = q.ClientIPAddr
		}
		if s.nakRequest || (q.ServerIdentifier() == nil && q.ClientIPAddr.IsUnspecified() && !req.Equal(s.addr.Addr().AsSlice())) {
			typ = dhcpv4.MessageTypeNak // INIT-REBOOT for an address that is not ours
		}
	default:
		return nil
	}
	r, err := dhcpv4.NewReplyFromRequest(q, dhcpv4.WithMessageType(typ), dhcpv4.WithServerIP(s.id.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.id.AsSlice())))
	if err != nil {
		panic(err)
	}
	if typ != dhcpv4.MessageTypeNak {
		r.YourIPAddr = s.addr.Addr().AsSlice()
		r.UpdateOption(dhcpv4.OptSubnetMask(net.CIDRMask(s.addr.Bits(), 32)))
		r.UpdateOption(dhcpv4.OptIPAddressLeaseTime(s.lease))
		r.UpdateOption(dhcpv4.OptRouter(s.router.AsSlice()))
		r.UpdateOption(dhcpv4.OptDNS(net.IPv4(192, 0, 2, 53)))
		for _, o := range s.extra {
			r.UpdateOption(o)
		}
	}
	p, err := dhcpv4.FromBytes(r.ToBytes())
	if err != nil {
		panic(err)
	}
	return &Inbound{Packet: p, SrcIP: s.id, SrcHW: s.hw}
}

// harness feeds a Machine with time and a set of fake servers, recording
// everything it outputs.
type harness struct {
	t       *testing.T
	m       *Machine
	now     time.Time
	servers []*fakeServer
	sent    []sentAt
	changes []Change
	stored  *Lease
	forgot  int
}

type sentAt struct {
	at time.Time
	Transmit
}

var (
	clientHW = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	epoch    = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
)

func newHarness(t *testing.T, cfg MachineConfig, servers ...*fakeServer) *harness {
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewPCG(1, 2))
	}
	if cfg.WAN == "" {
		cfg.WAN, cfg.Interface = "isp1", "wan0"
	}
	return &harness{t: t, m: NewMachine(cfg), now: epoch, servers: servers}
}

// do records out and delivers its packets; replies are fed back at once
// (a zero-latency network).
func (h *harness) do(out Output) {
	h.t.Helper()
	for i := 0; i < 100; i++ {
		h.changes = append(h.changes, out.Changes...)
		if out.Store != nil {
			h.stored = out.Store
		}
		if out.Forget {
			h.forgot++
			h.stored = nil
		}
		var replies []*Inbound
		for _, s := range out.Send {
			h.sent = append(h.sent, sentAt{h.now, s})
			for _, srv := range h.servers {
				if r := srv.handle(s); r != nil {
					replies = append(replies, r)
				}
			}
		}
		if len(replies) == 0 {
			return
		}
		// Later replies to the same transmission are delivered too, as on
		// a real segment; the machine must ignore the stale ones.
		out = Output{}
		for _, r := range replies {
			o := h.m.Receive(h.now, *r)
			out.Send = append(out.Send, o.Send...)
			out.Changes = append(out.Changes, o.Changes...)
			if o.Store != nil {
				out.Store = o.Store
			}
			out.Forget = out.Forget || o.Forget
		}
	}
	h.t.Fatal("reply loop did not settle")
}

// advance moves time forward by d, firing every deadline on the way.
func (h *harness) advance(d time.Duration) {
	h.t.Helper()
	end := h.now.Add(d)
	for i := 0; ; i++ {
		if i > 10000 {
			h.t.Fatal("timer loop did not settle")
		}
		w := h.m.Wakeup()
		if w.IsZero() || w.After(end) {
			break
		}
		if w.Before(h.now) {
			h.t.Fatalf("wakeup %v is in the past (now %v)", w, h.now)
		}
		h.now = w
		h.do(h.m.Timer(h.now))
	}
	h.now = end
}

// takeChanges returns and clears the recorded changes.
func (h *harness) takeChanges() []Change {
	c := h.changes
	h.changes = nil
	return c
}

// takeSent returns and clears the recorded transmissions.
func (h *harness) takeSent() []sentAt {
	s := h.sent
	h.sent = nil
	return s
}

func (h *harness) wantState(s State) {
	h.t.Helper()
	if h.m.State() != s {
		h.t.Fatalf("state %v, want %v", h.m.State(), s)
	}
}

func (h *harness) wantChanges(kinds ...string) []Change {
	h.t.Helper()
	got := h.takeChanges()
	var gk []string
	for _, c := range got {
		gk = append(gk, c.Kind+"/"+c.Reason)
	}
	if len(gk) != len(kinds) {
		h.t.Fatalf("changes %v, want %v", gk, kinds)
	}
	for i := range kinds {
		if gk[i] != kinds[i] {
			h.t.Fatalf("changes %v, want %v", gk, kinds)
		}
	}
	return got
}

func msgTypes(s []sentAt) []string {
	var out []string
	for _, x := range s {
		out = append(out, x.Packet.MessageType().String())
	}
	return out
}

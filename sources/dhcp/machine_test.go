package dhcp

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/wanreact/wanreact/reactor"
)

// bind brings a fresh machine to BOUND through the full exchange.
func bind(t *testing.T, cfg MachineConfig, servers ...*fakeServer) *harness {
	t.Helper()
	h := newHarness(t, cfg, servers...)
	h.do(h.m.LinkUp(h.now, clientHW))
	h.wantState(StateBound)
	h.wantChanges("bound/BOUND")
	h.takeSent()
	return h
}

func TestAcquireInitSelectingRequestingBound(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	h := newHarness(t, MachineConfig{Hostname: "router", ClientID: []byte{1, 2, 0, 0, 0, 0, 1}}, srv)
	if h.m.State() != StateLinkDown || h.m.Transport() != TransportNone || !h.m.Wakeup().IsZero() {
		t.Fatalf("fresh machine: state %v transport %v wakeup %v", h.m.State(), h.m.Transport(), h.m.Wakeup())
	}

	// Drive SELECTING by hand to see each step.
	srv.down = true
	h.do(h.m.LinkUp(h.now, clientHW))
	h.wantState(StateSelecting)
	if h.m.Transport() != TransportRaw {
		t.Fatalf("SELECTING transport %v, want raw", h.m.Transport())
	}
	sent := h.takeSent()
	if len(sent) != 1 || sent[0].Packet.MessageType() != dhcpv4.MessageTypeDiscover || !sent[0].Broadcast() || sent[0].Src.IsValid() {
		t.Fatalf("want one broadcast DISCOVER from 0.0.0.0, got %v", msgTypes(sent))
	}
	d := sent[0].Packet
	if d.HostName() != "router" || string(d.Options.Get(dhcpv4.OptionClientIdentifier)) != string([]byte{1, 2, 0, 0, 0, 0, 1}) ||
		!d.IsOptionRequested(dhcpv4.OptionClasslessStaticRoute) || !d.IsOptionRequested(dhcpv4.OptionInterfaceMTU) ||
		d.ClientHWAddr.String() != clientHW.String() {
		t.Fatalf("DISCOVER lacks hostname, client id, MAC or requested options: %s", d.Summary())
	}

	srv.down = false
	h.advance(h.m.Wakeup().Sub(h.now)) // first retransmission reaches the server
	h.wantState(StateBound)
	sent = h.takeSent()
	if got := msgTypes(sent); len(got) != 2 || got[0] != "DISCOVER" || got[1] != "REQUEST" {
		t.Fatalf("sent %v, want DISCOVER REQUEST", got)
	}
	req := sent[1].Packet
	if req.TransactionID != d.TransactionID || !req.RequestedIPAddress().Equal(net.IPv4(198, 18, 0, 10)) ||
		!req.ServerIdentifier().Equal(net.IPv4(198, 18, 0, 1)) || !req.ClientIPAddr.IsUnspecified() || !sent[1].Broadcast() {
		t.Fatalf("SELECTING REQUEST wrong: %s", req.Summary())
	}
	ch := h.wantChanges("bound/BOUND")[0]
	l := ch.New
	if ch.Old != nil || l.Address != netip.MustParsePrefix("198.18.0.10/24") || l.Server != srv.id || l.Gateway() != srv.id ||
		l.Duration != time.Hour || l.T1 != 30*time.Minute || l.T2 != 52*time.Minute+30*time.Second ||
		!l.Acquired.Equal(sent[1].at) || l.HWAddr != clientHW.String() || l.ServerHWAddr != srv.hw.String() {
		t.Fatalf("lease wrong: %+v", l)
	}
	if h.stored != l {
		t.Fatal("lease not stored")
	}
	if h.m.Transport() != TransportNone || !h.m.Wakeup().Equal(l.RenewAt()) {
		t.Fatalf("BOUND: transport %v wakeup %v, want none and T1 %v", h.m.Transport(), h.m.Wakeup(), l.RenewAt())
	}
	ev := l.LeaseChange("bound")
	if ev.Prefix != l.Address || ev.Gateway != srv.id || ev.Server != srv.id || len(ev.DNS) != 1 || !ev.Expiry.Equal(l.Acquired.Add(time.Hour)) || ev.Lease != time.Hour {
		t.Fatalf("event wrong: %+v", ev)
	}
}

func TestRenewingAtT1Ack(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	h := bind(t, MachineConfig{}, srv)
	first := h.m.Lease()
	t1 := first.RenewAt()

	h.advance(t1.Sub(h.now) - time.Millisecond)
	if len(h.takeSent()) != 0 {
		t.Fatal("sent before T1")
	}
	h.advance(time.Millisecond)
	h.wantState(StateBound)
	sent := h.takeSent()
	if len(sent) != 1 || sent[0].Dst != srv.id || sent[0].Src != first.Address.Addr() || !sent[0].at.Equal(t1) ||
		!sent[0].Packet.ClientIPAddr.Equal(first.Address.Addr().AsSlice()) || sent[0].Packet.RequestedIPAddress() != nil ||
		sent[0].Packet.ServerIdentifier() != nil || sent[0].DstHW.String() != srv.hw.String() {
		t.Fatalf("RENEWING REQUEST wrong: %+v", sent)
	}
	ch := h.wantChanges("renewed/RENEW")[0]
	if ch.Old != first || ch.New.Address != first.Address || !ch.New.Acquired.Equal(t1) || !h.m.Wakeup().Equal(t1.Add(30*time.Minute)) {
		t.Fatalf("renewal wrong: %+v wakeup %v", ch.New, h.m.Wakeup())
	}
	if h.stored != ch.New {
		t.Fatal("renewed lease not stored")
	}
}

func TestRenewingTransportAndRetransmission(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	h := bind(t, MachineConfig{}, srv)
	l := h.m.Lease()
	srv.down = true
	h.advance(l.RenewAt().Sub(h.now))
	h.wantState(StateRenewing)
	if h.m.Transport() != TransportUnicast {
		t.Fatalf("RENEWING transport %v, want unicast", h.m.Transport())
	}
	// Retransmissions at half the time left to T2, at least 60 s apart.
	h.advance(l.RebindAt().Sub(h.now) - time.Nanosecond)
	sent := h.takeSent()
	if len(sent) < 3 {
		t.Fatalf("only %d RENEWING transmissions", len(sent))
	}
	for i := 1; i < len(sent); i++ {
		gap := sent[i].at.Sub(sent[i-1].at)
		left := l.RebindAt().Sub(sent[i-1].at)
		if want := max(left/2, time.Minute); gap != want {
			t.Fatalf("retransmission %d after %v, want %v", i, gap, want)
		}
		if sent[i].Packet.TransactionID != sent[0].Packet.TransactionID || sent[i].Dst != srv.id {
			t.Fatal("retransmission changed xid or destination")
		}
	}
	if sent[len(sent)-1].Packet.NumSeconds == 0 {
		t.Fatal("secs not updated on retransmission")
	}
}

func TestRenewingNak(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	h := bind(t, MachineConfig{}, srv)
	old := h.m.Lease()
	srv.nakRequest = true
	h.advance(old.RenewAt().Sub(h.now))
	// NAK: the lease is gone, discovery restarts at once.
	ch := h.wantChanges("nak/EXPIRE")
	if ch[0].Old != old || ch[0].New != nil || h.forgot != 1 || h.m.Lease() != nil {
		t.Fatalf("nak change %+v forgot %d", ch[0], h.forgot)
	}
	if got := msgTypes(h.takeSent()); len(got) < 3 || got[0] != "REQUEST" || got[1] != "DISCOVER" || got[2] != "REQUEST" {
		t.Fatalf("sent %v, want REQUEST (renew) then DISCOVER REQUEST", got)
	}
	// The server relents: the next round binds the new lease.
	srv.nakRequest = false
	srv.addr = netip.MustParsePrefix("198.18.0.77/24")
	h.advance(2 * time.Minute)
	h.wantState(StateBound)
	ch = h.wantChanges("bound/BOUND")
	if ch[0].New.Address.Addr() != netip.MustParseAddr("198.18.0.77") {
		t.Fatalf("rebound to %v", ch[0].New.Address)
	}
}

func TestServerGoneAtT1RebindsToAnother(t *testing.T) {
	a := newFakeServer("198.18.0.1", "198.18.0.10/24")
	b := newFakeServer("198.18.0.2", "198.18.0.10/24")
	b.down = true
	h := bind(t, MachineConfig{}, a, b)
	l := h.m.Lease()
	a.down, b.down = true, false

	// B does not answer unicasts to A, so RENEWING gets nothing...
	h.advance(l.RebindAt().Sub(h.now) - time.Nanosecond)
	h.wantState(StateRenewing)
	if len(h.takeChanges()) != 0 {
		t.Fatal("change while RENEWING unanswered")
	}
	for _, s := range h.takeSent() {
		if s.Dst != a.id {
			t.Fatalf("RENEWING sent to %v, want only server A", s.Dst)
		}
	}
	// ...until T2, when the broadcast REBINDING request reaches B.
	h.advance(time.Nanosecond)
	sent := h.takeSent()
	if len(sent) != 1 || !sent[0].Broadcast() || sent[0].Src != l.Address.Addr() || !sent[0].Packet.ClientIPAddr.Equal(l.Address.Addr().AsSlice()) {
		t.Fatalf("REBINDING request wrong: %+v", sent)
	}
	ch := h.wantChanges("renewed/REBIND")[0]
	if ch.New.Server != b.id || ch.New.Address != l.Address || ch.New.Gateway() != b.id {
		t.Fatalf("rebound lease %+v, want server B", ch.New)
	}
	h.wantState(StateBound)
	// The next renewal goes to B.
	h.advance(ch.New.RenewAt().Sub(h.now))
	if s := h.takeSent(); len(s) != 1 || s[0].Dst != b.id {
		t.Fatalf("next renewal %+v, want unicast to B", s)
	}
}

func TestRebindingRetransmissionAndExpiry(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	h := bind(t, MachineConfig{}, srv)
	l := h.m.Lease()
	srv.down = true
	h.advance(l.RebindAt().Sub(h.now))
	h.wantState(StateRebinding)
	h.takeSent()
	h.advance(l.Expiry().Sub(h.now) - time.Nanosecond)
	h.wantState(StateRebinding)
	sent := h.takeSent()
	for i := 1; i < len(sent); i++ {
		if gap := sent[i].at.Sub(sent[i-1].at); gap < time.Minute {
			t.Fatalf("REBINDING retransmission after %v < 60 s", gap)
		}
	}
	h.advance(time.Nanosecond)
	ch := h.wantChanges("expired/EXPIRE")[0]
	if ch.Old != l || h.m.Lease() != nil || h.forgot != 1 {
		t.Fatalf("expiry: %+v lease %v forgot %d", ch, h.m.Lease(), h.forgot)
	}
	h.wantState(StateSelecting)
	sent = h.takeSent()
	if len(sent) != 1 || sent[0].Packet.MessageType() != dhcpv4.MessageTypeDiscover ||
		!sent[0].Packet.RequestedIPAddress().Equal(l.Address.Addr().AsSlice()) {
		t.Fatalf("after expiry want DISCOVER asking for the old address, got %+v", sent)
	}
	ev := ch.Old.LeaseChange(ch.Kind)
	if ev.Kind != "expired" || ev.Prefix != l.Address {
		t.Fatalf("expired event %+v", ev)
	}
}

func TestDiscoverBackoff(t *testing.T) {
	h := newHarness(t, MachineConfig{})
	h.do(h.m.LinkUp(h.now, clientHW))
	h.advance(10 * time.Minute)
	sent := h.takeSent()
	base := time.Second
	for i := 1; i < len(sent); i++ {
		gap := sent[i].at.Sub(sent[i-1].at)
		j := min(time.Second, base/4)
		if gap < base-j || gap > base+j {
			t.Fatalf("retry %d after %v, want %v ±%v", i, gap, base, j)
		}
		if sent[i].Packet.TransactionID != sent[0].Packet.TransactionID {
			t.Fatal("DISCOVER retransmission changed xid")
		}
		base = min(2*base, 64*time.Second)
	}
	if base != 64*time.Second {
		t.Fatalf("backoff never reached the 64 s cap (last %v, %d sends)", base, len(sent))
	}
	// FAIL is reported once, after 60 s without a lease.
	ch := h.wantChanges("/FAIL")
	if ch[0].Old != nil || ch[0].New != nil {
		t.Fatal("FAIL carries a lease")
	}
}

func TestRequestingTimesOutToDiscover(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	srv.silentReq = true
	h := newHarness(t, MachineConfig{}, srv)
	h.do(h.m.LinkUp(h.now, clientHW))
	h.wantState(StateRequesting)
	h.advance(20 * time.Second)
	got := msgTypes(h.takeSent())
	want := []string{"DISCOVER", "REQUEST", "REQUEST", "REQUEST", "REQUEST", "DISCOVER", "REQUEST"}
	if len(got) < len(want) {
		t.Fatalf("sent %v, want prefix %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sent %v, want prefix %v", got, want)
		}
	}
}

func TestRepeatedNakBacksOff(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	srv.nakRequest = true
	h := newHarness(t, MachineConfig{}, srv)
	h.do(h.m.LinkUp(h.now, clientHW))
	// First NAK: rediscover at once; second: wait in INIT.
	h.wantState(StateInit)
	if got := msgTypes(h.takeSent()); len(got) != 4 {
		t.Fatalf("sent %v, want DISCOVER REQUEST DISCOVER REQUEST", got)
	}
	if len(h.takeChanges()) != 0 {
		t.Fatal("NAK without a lease must not emit an event")
	}
	if w := h.m.Wakeup().Sub(h.now); w < 750*time.Millisecond || w > 1250*time.Millisecond {
		t.Fatalf("INIT wait %v, want about 1 s", w)
	}
	if h.m.Transport() != TransportNone {
		t.Fatal("socket kept while waiting in INIT")
	}
	h.advance(time.Minute)
	sent := h.takeSent()
	if len(sent) > 20 {
		t.Fatalf("%d packets in a minute of NAKs: no backoff", len(sent))
	}
}

func TestStoredLeaseInitRebootAck(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	h0 := bind(t, MachineConfig{}, srv)
	stored := h0.stored

	// "Restart" ten minutes later with the stored lease.
	h := newHarness(t, MachineConfig{}, srv)
	h.now = stored.Acquired.Add(10 * time.Minute)
	h.do(h.m.Start(h.now, stored))
	ch := h.wantChanges("bound/")
	if ch[0].New != stored || h.m.State() != StateLinkDown {
		t.Fatal("stored lease not reported as bound before any network activity")
	}
	if len(h.takeSent()) != 0 {
		t.Fatal("sent before link up")
	}
	h.do(h.m.LinkUp(h.now, clientHW))
	sent := h.takeSent()
	if len(sent) != 1 {
		t.Fatalf("sent %v", msgTypes(sent))
	}
	r := sent[0].Packet
	if r.MessageType() != dhcpv4.MessageTypeRequest || !sent[0].Broadcast() || r.ServerIdentifier() != nil ||
		!r.ClientIPAddr.IsUnspecified() || !r.RequestedIPAddress().Equal(stored.Address.Addr().AsSlice()) {
		t.Fatalf("INIT-REBOOT request wrong: %s", r.Summary())
	}
	c := h.wantChanges("bound/REBOOT")[0]
	if c.Old != stored || c.New.Address != stored.Address || !c.New.Acquired.Equal(h.now) {
		t.Fatalf("reboot change %+v", c)
	}
	h.wantState(StateBound)
}

func TestStoredLeaseInitRebootNak(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	stored := bind(t, MachineConfig{}, srv).stored
	srv.addr = netip.MustParsePrefix("198.18.0.20/24") // the network moved on

	h := newHarness(t, MachineConfig{}, srv)
	h.do(h.m.Start(h.now, stored))
	h.takeChanges()
	h.do(h.m.LinkUp(h.now, clientHW))
	ch := h.wantChanges("nak/EXPIRE", "bound/BOUND")
	if ch[0].Old != stored || ch[1].New.Address != srv.addr || ch[1].Old != nil {
		t.Fatalf("changes %+v", ch)
	}
	if got := msgTypes(h.takeSent()); len(got) != 3 || got[0] != "REQUEST" || got[1] != "DISCOVER" {
		t.Fatalf("sent %v, want REQUEST DISCOVER REQUEST", got)
	}
}

func TestStoredLeaseInitRebootNoAnswer(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	stored := bind(t, MachineConfig{}, srv).stored
	srv.down = true

	h := newHarness(t, MachineConfig{}, srv)
	h.do(h.m.Start(h.now, stored))
	h.takeChanges()
	h.do(h.m.LinkUp(h.now, clientHW))
	h.advance(30 * time.Second)
	// Four tries (about 1+2+4+8 s), then the stored lease is used as is.
	if got := msgTypes(h.takeSent()); len(got) != requestAttempts {
		t.Fatalf("sent %v, want %d REQUESTs", got, requestAttempts)
	}
	h.wantState(StateBound)
	if len(h.takeChanges()) != 0 || h.forgot != 0 || h.m.Lease() != stored {
		t.Fatal("unanswered INIT-REBOOT changed the lease")
	}
	if h.m.Transport() != TransportNone {
		t.Fatal("socket kept in BOUND")
	}
	// T1 still renews.
	srv.down = false
	h.advance(stored.RenewAt().Sub(h.now))
	h.wantChanges("renewed/RENEW")
}

func TestStoredLeaseExpired(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	stored := bind(t, MachineConfig{}, srv).stored
	h := newHarness(t, MachineConfig{}, srv)
	h.now = stored.Expiry()
	h.do(h.m.Start(h.now, stored))
	if len(h.takeChanges()) != 0 || h.forgot != 1 || h.m.Lease() != nil {
		t.Fatal("expired stored lease was used")
	}
	srv.down = true
	h.do(h.m.LinkUp(h.now, clientHW))
	s := h.takeSent()
	if len(s) != 1 || s[0].Packet.MessageType() != dhcpv4.MessageTypeDiscover || !s[0].Packet.RequestedIPAddress().Equal(stored.Address.Addr().AsSlice()) {
		t.Fatalf("want DISCOVER asking for the old address, got %+v", s)
	}
}

func TestLinkFlapInitReboot(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	h := bind(t, MachineConfig{}, srv)
	l := h.m.Lease()
	h.do(h.m.LinkDown(h.now))
	h.wantState(StateLinkDown)
	if len(h.takeChanges()) != 0 || h.m.Transport() != TransportNone || !h.m.Wakeup().Equal(l.Expiry()) {
		t.Fatalf("link down: changes, transport %v or wakeup %v wrong", h.m.Transport(), h.m.Wakeup())
	}
	h.advance(5 * time.Second)
	if len(h.takeSent()) != 0 {
		t.Fatal("sent while link down")
	}
	h.do(h.m.LinkUp(h.now, clientHW))
	if s := h.takeSent(); len(s) != 1 || s[0].Packet.RequestedIPAddress() == nil || s[0].Packet.ServerIdentifier() != nil {
		t.Fatalf("link up: want one INIT-REBOOT REQUEST, got %+v", s)
	}
	h.wantChanges("bound/REBOOT")
	// A duplicate "up" changes nothing.
	h.do(h.m.LinkUp(h.now, clientHW))
	if len(h.takeSent()) != 0 {
		t.Fatal("duplicate link up sent a packet")
	}
}

func TestLinkDownUntilExpiry(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	h := bind(t, MachineConfig{}, srv)
	l := h.m.Lease()
	h.do(h.m.LinkDown(h.now))
	h.advance(l.Expiry().Sub(h.now))
	h.wantChanges("expired/EXPIRE")
	h.wantState(StateLinkDown)
	if len(h.takeSent()) != 0 || !h.m.Wakeup().IsZero() {
		t.Fatal("activity while link down after expiry")
	}
	h.do(h.m.LinkUp(h.now, clientHW))
	h.wantChanges("bound/BOUND")
}

func TestRevalidate(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	h := bind(t, MachineConfig{}, srv)
	h.do(h.m.Revalidate(h.now))
	if s := h.takeSent(); len(s) != 1 || s[0].Packet.RequestedIPAddress() == nil || !s[0].Broadcast() {
		t.Fatalf("revalidate: want INIT-REBOOT REQUEST, got %+v", s)
	}
	h.wantChanges("bound/REBOOT")
	h.do(h.m.LinkDown(h.now))
	if out := h.m.Revalidate(h.now); len(out.Send) != 0 {
		t.Fatal("revalidate while link down sent")
	}
}

func TestStopRelease(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	h := bind(t, MachineConfig{}, srv)
	out := h.m.Stop(h.now)
	if len(out.Send) != 0 || len(out.Changes) != 0 || out.Forget {
		t.Fatal("Stop without Release must keep the lease silently")
	}

	h = bind(t, MachineConfig{Release: true}, srv)
	l := h.m.Lease()
	out = h.m.Stop(h.now)
	if len(out.Send) != 1 || out.Send[0].Packet.MessageType() != dhcpv4.MessageTypeRelease || out.Send[0].Dst != srv.id ||
		!out.Send[0].Packet.ClientIPAddr.Equal(l.Address.Addr().AsSlice()) || !out.Send[0].Packet.ServerIdentifier().Equal(srv.id.AsSlice()) {
		t.Fatalf("release packet wrong: %+v", out.Send)
	}
	if len(out.Changes) != 1 || out.Changes[0].Kind != "released" || out.Changes[0].Reason != "RELEASE" || out.Changes[0].Old != l || !out.Forget {
		t.Fatalf("release changes %+v", out)
	}
}

func TestServerChangesAddressOnRenew(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	h := bind(t, MachineConfig{}, srv)
	old := h.m.Lease()
	srv.addr = netip.MustParsePrefix("198.18.0.11/24")
	h.advance(old.RenewAt().Sub(h.now))
	ch := h.wantChanges("bound/RENEW")[0]
	if ch.Old != old || ch.New.Address != srv.addr {
		t.Fatalf("change %+v", ch)
	}
}

func TestIgnoredPackets(t *testing.T) {
	a := newFakeServer("198.18.0.1", "198.18.0.10/24")
	b := newFakeServer("198.18.0.2", "198.18.0.20/24")
	a.down, b.down = true, true
	h := newHarness(t, MachineConfig{}, a, b)
	h.do(h.m.LinkUp(h.now, clientHW))
	disc := h.takeSent()[0]

	a.down = false
	offerA := a.handle(disc.Transmit)
	a.down = true
	// Wrong xid, wrong MAC, request opcode: all ignored.
	bad := *offerA.Packet
	bad.TransactionID[0]++
	if out := h.m.Receive(h.now, Inbound{Packet: &bad}); out.Ignored == "" {
		t.Fatal("foreign xid accepted")
	}
	bad = *offerA.Packet
	bad.ClientHWAddr = net.HardwareAddr{2, 9, 9, 9, 9, 9}
	if out := h.m.Receive(h.now, Inbound{Packet: &bad}); out.Ignored == "" {
		t.Fatal("foreign chaddr accepted")
	}
	bad = *offerA.Packet
	bad.OpCode = dhcpv4.OpcodeBootRequest
	if out := h.m.Receive(h.now, Inbound{Packet: &bad}); out.Ignored == "" {
		t.Fatal("request accepted as reply")
	}
	bad = *offerA.Packet
	bad.YourIPAddr = net.IPv4(224, 0, 0, 1)
	if out := h.m.Receive(h.now, Inbound{Packet: &bad}); out.Ignored == "" {
		t.Fatal("multicast yiaddr accepted")
	}
	if out := h.m.Receive(h.now, Inbound{}); out.Ignored == "" {
		t.Fatal("nil packet accepted")
	}
	h.wantState(StateSelecting)

	// A's offer is taken; an ACK from B (not selected) is then ignored.
	out := h.m.Receive(h.now, *offerA)
	h.wantState(StateRequesting)
	b.down = false
	ackB := b.handle(Transmit{Packet: rewriteSID(out.Send[0].Packet, b.id)})
	if out := h.m.Receive(h.now, *ackB); out.Ignored == "" || len(out.Changes) != 0 {
		t.Fatal("ACK from a server not selected accepted")
	}
	h.wantState(StateRequesting)
	// An OFFER in REQUESTING is ignored too.
	if out := h.m.Receive(h.now, *offerA); out.Ignored == "" {
		t.Fatal("offer accepted in REQUESTING")
	}
}

// rewriteSID returns a copy of a REQUEST aimed at another server.
func rewriteSID(p *dhcpv4.DHCPv4, sid netip.Addr) *dhcpv4.DHCPv4 {
	q, _ := dhcpv4.FromBytes(p.ToBytes())
	q.UpdateOption(dhcpv4.OptServerIdentifier(sid.AsSlice()))
	return q
}

func TestClasslessRoutesOverrideRouter(t *testing.T) {
	srv := newFakeServer("198.18.0.1", "198.18.0.10/24")
	srv.router = netip.MustParseAddr("198.18.0.254") // option 3, to be ignored
	srv.extra = []dhcpv4.Option{
		{Code: dhcpv4.OptionClasslessStaticRoute, Value: dhcpv4.OptionGeneric{Data: []byte{
			24, 198, 51, 100, 198, 18, 0, 1, // 198.51.100.0/24 via 198.18.0.1
			0, 198, 18, 0, 2, // default via 198.18.0.2
			32, 203, 0, 113, 9, 0, 0, 0, 0, // 203.0.113.9/32 on-link
		}}},
		{Code: dhcpv4.OptionInterfaceMTU, Value: dhcpv4.OptionGeneric{Data: []byte{0x05, 0xd4}}},
	}
	h := bind(t, MachineConfig{}, srv)
	ev := h.m.Lease().LeaseChange("bound")
	want := []reactor.StaticRoute{
		{Dst: netip.MustParsePrefix("198.51.100.0/24"), Gateway: netip.MustParseAddr("198.18.0.1")},
		{Dst: netip.MustParsePrefix("203.0.113.9/32")},
	}
	if ev.Gateway != netip.MustParseAddr("198.18.0.2") || len(ev.Routes) != 2 || ev.Routes[0] != want[0] || ev.Routes[1] != want[1] || ev.MTU != 1492 {
		t.Fatalf("event %+v, want gateway 198.18.0.2 from option 121, routes %v, mtu 1492", ev, want)
	}
}

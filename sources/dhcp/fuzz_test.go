package dhcp

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// seedPackets are well-formed server replies covering every option the
// client decodes; the fuzzer mutates them.
func seedPackets() [][]byte {
	full := ack(
		dhcpv4.OptSubnetMask(net.CIDRMask(24, 32)),
		dhcpv4.OptRouter(net.IPv4(198, 18, 0, 1)),
		dhcpv4.OptDNS(net.IPv4(192, 0, 2, 53), net.IPv4(192, 0, 2, 54)),
		dhcpv4.OptDomainName("isp.example"),
		dhcpv4.OptHostName("cpe"),
		dhcpv4.OptIPAddressLeaseTime(time.Hour),
		dhcpv4.OptRenewTimeValue(20*time.Minute),
		dhcpv4.OptRebindingTimeValue(40*time.Minute),
		generic(dhcpv4.OptionInterfaceMTU, 0x05, 0xd4),
		generic(dhcpv4.OptionClasslessStaticRoute, 24, 198, 51, 100, 198, 18, 0, 1, 0, 198, 18, 0, 1),
	)
	nak := ack()
	nak.YourIPAddr = net.IPv4zero
	nak.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeNak))
	offer := ack(dhcpv4.OptIPAddressLeaseTime(2 * time.Minute))
	offer.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeOffer))
	return [][]byte{full.ToBytes(), nak.ToBytes(), offer.ToBytes(), ack().ToBytes()}
}

// FuzzDecodePacket feeds arbitrary bytes through everything a received
// datagram meets: the IP/UDP parser, the DHCP decoder, the lease decoder,
// the state machine and the hook environment. Nothing may panic, and any
// lease the decoder accepts must satisfy the invariants the lease file
// checks.
func FuzzDecodePacket(f *testing.F) {
	for _, p := range seedPackets() {
		f.Add(p)
		f.Add(buildIPv4UDP(p, netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("255.255.255.255"), serverPort, clientPort))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if payload, _, ok := parseIPv4UDP(b, clientPort); ok {
			b = payload
		}
		p, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		if l, err := leaseFromAck(p, netip.MustParseAddr("198.18.0.2")); err == nil {
			l.WAN, l.Interface, l.Acquired = "isp1", "wan0", epoch
			if err := l.validate(); err != nil {
				t.Fatalf("decoder accepted a lease the file loader refuses: %v: %+v", err, l)
			}
			_ = l.LeaseChange("bound")
			for _, kv := range HookEnv(l, l, "RENEW") {
				if strings.ContainsAny(kv, "\x00\n") {
					t.Fatalf("hook env %q", kv)
				}
			}
		}
		// Through the machine in every receiving state, with xid and
		// chaddr forced to match so the packet gets past the first checks.
		for _, st := range []State{StateSelecting, StateRequesting, StateInitReboot, StateRenewing, StateRebinding} {
			m := NewMachine(MachineConfig{WAN: "isp1", Interface: "wan0", Rand: rand.New(rand.NewPCG(1, 1))})
			m.hw = clientHW
			m.state = st
			m.xid = p.TransactionID
			m.sentAt = epoch
			if st != StateSelecting && st != StateRequesting {
				m.lease = testLease()
			}
			if st == StateRequesting {
				m.offer = testLease()
			}
			q := *p
			q.ClientHWAddr = clientHW
			out := m.Receive(epoch.Add(time.Minute), Inbound{Packet: &q, SrcIP: netip.MustParseAddr("198.18.0.1")})
			if out.Store != nil {
				if err := out.Store.validate(); err != nil {
					t.Fatalf("machine stores an invalid lease: %v", err)
				}
			}
			_ = m.Wakeup()
		}
	})
}

// FuzzClasslessRoutes checks that option 121 decoding never panics and
// that whatever it accepts encodes back to the same routes.
func FuzzClasslessRoutes(f *testing.F) {
	f.Add([]byte{24, 198, 51, 100, 198, 18, 0, 1, 0, 198, 18, 0, 1})
	f.Add([]byte{32, 203, 0, 113, 9, 0, 0, 0, 0})
	f.Add([]byte{33, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeClasslessRoutes(b)
		if err != nil {
			return
		}
		again, err := DecodeClasslessRoutes(EncodeClasslessRoutes(r))
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("round trip %v -> %v (%v)", r, again, err)
		}
	})
}

// FuzzLeaseFile checks that a damaged lease file never crashes the client
// and that whatever loads is usable.
func FuzzLeaseFile(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"address":"198.18.0.10/24","server":"198.18.0.1","lease_ns":3600000000000,"t1_ns":1,"t2_ns":2,"acquired":"2026-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLeaseFile(b)
		if err != nil {
			return
		}
		_ = l.LeaseChange("bound")
		_ = HookEnv(nil, l, "BOUND")
		m := NewMachine(MachineConfig{WAN: "isp1", Interface: "wan0", Rand: rand.New(rand.NewPCG(1, 1))})
		m.Start(l.Acquired, l)
		m.LinkUp(l.Acquired, clientHW)
		_ = m.Wakeup()
	})
}

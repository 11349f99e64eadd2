package dhcp

import (
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// BenchmarkDecodeAck is a full server reply as the raw socket reads it:
// IPv4/UDP framing, DHCP decoding and lease extraction with every option
// the client reads (the richest fuzz seed).
func BenchmarkDecodeAck(b *testing.B) {
	pkt := buildIPv4UDP(seedPackets()[0], netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("255.255.255.255"), serverPort, clientPort)
	b.ReportAllocs()
	for b.Loop() {
		payload, src, ok := parseIPv4UDP(pkt, clientPort)
		if !ok {
			b.Fatal("framing rejected")
		}
		p, err := dhcpv4.FromBytes(payload)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := leaseFromAck(p, src); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeClasslessRoutes decodes an option 121 of 8 routes.
func BenchmarkDecodeClasslessRoutes(b *testing.B) {
	var opt []byte
	for i := 0; i < 8; i++ {
		opt = append(opt, 24, 198, 51, byte(i), 198, 18, 0, 1)
	}
	b.ReportAllocs()
	for b.Loop() {
		r, err := DecodeClasslessRoutes(opt)
		if err != nil || len(r) != 8 {
			b.Fatalf("%v, %v", r, err)
		}
	}
}

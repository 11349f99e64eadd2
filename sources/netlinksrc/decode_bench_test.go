package netlinksrc

import (
	"testing"

	"golang.org/x/sys/unix"
)

// Decoders alone, one message body each, without the tracker: what every
// rtnetlink message the daemon reads costs before any filter runs (routes
// are filtered after decodeRoute, see tracker.handleRoute).

func BenchmarkDecodeLink(b *testing.B) {
	body := linkBody(0, 2, up, "wan0", operUp, 1500)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeLink(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeAddr(b *testing.B) {
	body := addrBody(2, 24, "203.0.113.2", "203.0.113.2")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeAddr(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeRoute is a routing daemon's typical route: gateway,
// output interface, metric, in a table of its own.
func BenchmarkDecodeRoute(b *testing.B) {
	body := routeBody(routeSpec{table: 300, dst: "198.18.4.0/24", protocol: unix.RTPROT_BGP, gw: "192.0.2.1", oif: 2, priority: 20})
	b.ReportAllocs()
	for b.Loop() {
		m, err := decodeRoute(body)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.nexthops(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeRule(b *testing.B) {
	body := ruleBody(ruleSpec{priority: 10100, table: 11, mark: 0x100, mask: 0xff00, protocol: 87})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeRule(body); err != nil {
			b.Fatal(err)
		}
	}
}

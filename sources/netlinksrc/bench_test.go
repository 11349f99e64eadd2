package netlinksrc

import (
	"log/slog"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

// The emit path per datagram: framing, decoding, filtering, duplicate
// suppression and (when something changed) the emit call. recv itself (one
// recvmsg per notification) is not included.

func benchTracker(b *testing.B) (*tracker, *int) {
	n := new(int)
	t := newTracker(func(reactor.Event) { *n++ }, daemonRouteFilter, daemonRuleFilter, slog.New(slog.DiscardHandler))
	return t, n
}

func handleDatagram(b *testing.B, t *tracker, d []byte) {
	for len(d) > 0 {
		m, rest, err := nextMessage(d)
		if err != nil {
			b.Fatal(err)
		}
		t.handle(m, false)
		d = rest
	}
}

// BenchmarkRouteStormUnwatched is the storm case: a route change in a table
// nobody watches.
func BenchmarkRouteStormUnwatched(b *testing.B) {
	t, n := benchTracker(b)
	d := datagram(nlmsg{typ: unix.RTM_NEWROUTE, flags: create,
		data: routeBody(routeSpec{table: 300, dst: "198.18.4.0/24", protocol: unix.RTPROT_BGP, gw: "192.0.2.1", oif: 2, priority: 20})})
	b.ReportAllocs()
	for b.Loop() {
		handleDatagram(b, t, d)
	}
	if *n != 0 {
		b.Fatalf("%d events for an unwatched table", *n)
	}
}

// BenchmarkLinkDuplicate is an RTM_NEWLINK that changes nothing we report
// (statistics, MTU...).
func BenchmarkLinkDuplicate(b *testing.B) {
	t, n := benchTracker(b)
	d := datagram(nlmsg{typ: unix.RTM_NEWLINK, data: linkBody(0, 2, up, "wan0", operUp, 1500)})
	handleDatagram(b, t, d)
	b.ReportAllocs()
	for b.Loop() {
		handleDatagram(b, t, d)
	}
	if *n != 1 {
		b.Fatalf("%d events, want 1", *n)
	}
}

// BenchmarkLinkFlap emits a carrier loss and a carrier recovery per op.
func BenchmarkLinkFlap(b *testing.B) {
	t, n := benchTracker(b)
	upD := datagram(nlmsg{typ: unix.RTM_NEWLINK, data: linkBody(0, 2, up, "wan0", operUp, 1500)})
	downD := datagram(nlmsg{typ: unix.RTM_NEWLINK, data: linkBody(0, 2, unix.IFF_UP, "wan0", ifOperLowerLayerDown, 1500)})
	b.ReportAllocs()
	for b.Loop() {
		handleDatagram(b, t, downD)
		handleDatagram(b, t, upD)
	}
	if *n == 0 {
		b.Fatal("no events")
	}
}

// BenchmarkRouteWatchedAddDel emits a watched route added then removed.
func BenchmarkRouteWatchedAddDel(b *testing.B) {
	t, n := benchTracker(b)
	body := routeBody(routeSpec{table: 100, protocol: unix.RTPROT_STATIC, gw: "192.0.2.1", oif: 2})
	add := datagram(nlmsg{typ: unix.RTM_NEWROUTE, flags: create, data: body})
	del := datagram(nlmsg{typ: unix.RTM_DELROUTE, data: body})
	b.ReportAllocs()
	for b.Loop() {
		handleDatagram(b, t, add)
		handleDatagram(b, t, del)
	}
	if *n == 0 {
		b.Fatal("no events")
	}
}

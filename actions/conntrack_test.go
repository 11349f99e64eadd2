package actions

import (
	"net/netip"
	"slices"
	"sort"
	"testing"

	mnl "github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

// ctFlow describes one UDP conntrack entry to create: the original tuple and
// the destination of the reply tuple (which differs from the original
// source when the flow is source-NATed to a WAN address).
type ctFlow struct {
	name       string
	src, dst   string
	sport      uint16
	replyDst   string
	mark       uint32
	wantDelete bool
}

func TestConntrackFlushByWAN(t *testing.T) {
	requireRoot(t)
	rns := newNS(t, "ct")
	conn, err := conntrack.Dial(&mnl.Config{NetNS: int(rns.ns)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	const wanAddr = "203.0.113.2"
	flows := []ctFlow{
		{name: "lan NATed to wan0", src: "192.168.1.10", dst: "198.51.100.1", sport: 1000, replyDst: wanAddr, wantDelete: true},
		{name: "router-originated from wan0", src: wanAddr, dst: "198.51.100.7", sport: 1001, replyDst: wanAddr, wantDelete: true},
		{name: "lan NATed to wan1", src: "192.168.1.11", dst: "198.51.100.1", sport: 1002, replyDst: "198.18.0.2"},
		{name: "router-originated from wan1", src: "198.18.0.2", dst: "198.51.100.1", sport: 1003, replyDst: "198.18.0.2"},
		{name: "marked for wan0 (NATed elsewhere)", src: "192.168.1.12", dst: "192.0.2.50", sport: 1004, replyDst: "198.18.0.2", mark: 0x100, wantDelete: true},
		{name: "marked for wan0 plus bits outside the mask", src: "192.168.1.13", dst: "192.0.2.50", sport: 1005, replyDst: "198.18.0.2", mark: 0x101, wantDelete: true},
		{name: "marked for wan1", src: "192.168.1.14", dst: "192.0.2.50", sport: 1006, replyDst: "198.18.0.2", mark: 0x200},
		{name: "to the wan0 address, not from it", src: "198.51.100.9", dst: wanAddr, sport: 1007, replyDst: "198.51.100.9"},
	}
	for _, f := range flows {
		fl := conntrack.NewFlow(unix.IPPROTO_UDP, 0, netip.MustParseAddr(f.src), netip.MustParseAddr(f.dst), f.sport, 53, 120, f.mark)
		fl.TupleReply.IP.DestinationAddress = netip.MustParseAddr(f.replyDst)
		if f.replyDst != f.src {
			fl.TupleReply.Proto.DestinationPort = 40000 + f.sport
		}
		if err := conn.Create(fl); err != nil {
			t.Fatalf("create %s: %v", f.name, err)
		}
	}
	remaining := func() []string {
		t.Helper()
		got, err := conn.Dump(nil)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, g := range got {
			for _, f := range flows {
				if g.TupleOrig.IP.SourceAddress.String() == f.src && g.TupleOrig.Proto.SourcePort == f.sport {
					out = append(out, f.name)
				}
			}
		}
		sort.Strings(out)
		return out
	}
	var all, keep []string
	for _, f := range flows {
		all = append(all, f.name)
		if !f.wantDelete {
			keep = append(keep, f.name)
		}
	}
	sort.Strings(all)
	sort.Strings(keep)
	if got := remaining(); !slices.Equal(got, all) {
		t.Fatalf("setup: conntrack has %q, want %q", got, all)
	}

	fl, err := NewConntrackFlusher(rns.ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fl.Close() })

	// Nothing to match on: must not flush anything.
	if n, err := fl.Flush(reactor.FlushConntrack{WAN: "isp1"}); err != nil || n != 0 {
		t.Fatalf("empty intent deleted %d (err %v)", n, err)
	}
	if got := remaining(); !slices.Equal(got, all) {
		t.Fatalf("empty intent removed flows: left %q", got)
	}

	n, err := fl.Flush(reactor.FlushConntrack{
		WAN: "isp1", Address: netip.MustParsePrefix(wanAddr + "/24"), Mark: 0x100, Mask: 0xff00, Reason: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(all)-len(keep) {
		t.Errorf("deleted %d entries, want %d", n, len(all)-len(keep))
	}
	assertEqual(t, "remaining flows", remaining(), keep)

	// Again: everything of that WAN is gone, so nothing more is deleted.
	if n, err := fl.Flush(reactor.FlushConntrack{WAN: "isp1", Address: netip.MustParsePrefix(wanAddr + "/24"), Mark: 0x100, Mask: 0xff00}); err != nil || n != 0 {
		t.Errorf("second flush deleted %d (err %v)", n, err)
	}
}

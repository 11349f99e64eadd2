package netlinksrc

import (
	"encoding/binary"
	"log/slog"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

func littleEndian() bool { return binary.NativeEndian.Uint16([]byte{1, 0}) == 1 }

// TestDecodeRuleWireBytes decodes an RTM_NEWRULE body written out byte by
// byte from <linux/fib_rules.h>, as "ip rule add from 203.0.113.0/24
// fwmark 0x100/0xff00 lookup 1000 pref 10100 protocol static" produces it.
func TestDecodeRuleWireBytes(t *testing.T) {
	if !littleEndian() {
		t.Skip("wire bytes below are little-endian")
	}
	b := []byte{
		// struct fib_rule_hdr
		unix.AF_INET, 0, 24, 0, // family, dst_len, src_len, tos
		252, 0, 0, 1, // table (RT_TABLE_COMPAT), res1, res2, action FR_ACT_TO_TBL
		0, 0, 0, 0, // flags
		8, 0, 15, 0, 0xe8, 0x03, 0, 0, // FRA_TABLE 1000
		8, 0, 2, 0, 203, 0, 113, 0, // FRA_SRC 203.0.113.0
		8, 0, 6, 0, 0x74, 0x27, 0, 0, // FRA_PRIORITY 10100
		8, 0, 10, 0, 0x00, 0x01, 0, 0, // FRA_FWMARK 0x100
		8, 0, 16, 0, 0x00, 0xff, 0, 0, // FRA_FWMASK 0xff00
		5, 0, 21, 0, 4, 0, 0, 0, // FRA_PROTOCOL static (4), padded
		12, 0, 20, 0x80, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, // NLA_F_NESTED|FRA_UID_RANGE: ignored
	}
	got, err := decodeRule(b)
	if err != nil {
		t.Fatalf("decodeRule: %v", err)
	}
	want := ruleMsg{family: unix.AF_INET, action: frActToTbl, priority: 10100, table: 1000,
		mark: 0x100, mask: 0xff00, hasMark: true, hasMask: true, protocol: unix.RTPROT_STATIC}
	if got != want {
		t.Fatalf("decodeRule = %+v, want %+v", got, want)
	}
}

func TestDecodeRuleDefaults(t *testing.T) {
	// The kernel omits FRA_PRIORITY for priority 0 and FRA_FWMARK when
	// no mark is matched; the table then comes from the header alone.
	b := make([]byte, sizeofFibRuleHdr)
	b[0], b[4], b[7] = unix.AF_INET, unix.RT_TABLE_LOCAL, frActToTbl
	got, err := decodeRule(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.priority != 0 || got.table != unix.RT_TABLE_LOCAL || got.hasMark || got.mark != 0 {
		t.Fatalf("decodeRule = %+v", got)
	}
}

func TestDecodeRuleMalformed(t *testing.T) {
	valid := ruleBody(ruleSpec{priority: 1, table: 100})
	cases := map[string][]byte{
		"empty":             nil,
		"short header":      valid[:sizeofFibRuleHdr-1],
		"attr header cut":   valid[:sizeofFibRuleHdr+2],
		"attr value cut":    valid[:sizeofFibRuleHdr+6],
		"attr length 3":     cat(valid[:sizeofFibRuleHdr], []byte{3, 0, 6, 0}),
		"attr length large": cat(valid[:sizeofFibRuleHdr], []byte{200, 0, 6, 0, 1, 0, 0, 0}),
		"u32 too short":     cat(valid[:sizeofFibRuleHdr], attr(unix.FRA_PRIORITY, []byte{1, 2})),
		"protocol empty":    cat(valid[:sizeofFibRuleHdr], attr(unix.FRA_PROTOCOL, nil)),
	}
	for name, b := range cases {
		if m, err := decodeRule(b); err == nil {
			t.Errorf("%s: decodeRule(%x) = %+v, want error", name, b, m)
		}
	}
}

func TestDecodeLink(t *testing.T) {
	b := linkBody(unix.AF_UNSPEC, 7, unix.IFF_UP|unix.IFF_LOWER_UP|unix.IFF_RUNNING, "wan0", operUp, 1500)
	m, err := decodeLink(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.index != 7 || string(m.name) != "wan0" || m.operState != operUp || m.flags&unix.IFF_LOWER_UP == 0 {
		t.Fatalf("decodeLink = %+v", m)
	}
	for n := 0; n < len(b); n++ {
		decodeLink(b[:n]) // must not panic on any truncation
	}
	if _, err := decodeLink(b[:unix.SizeofIfInfomsg-1]); err == nil {
		t.Error("short ifinfomsg accepted")
	}
}

func TestDecodeAddr(t *testing.T) {
	m, err := decodeAddr(addrBody(3, 24, "203.0.113.2", "203.0.113.2"))
	if err != nil {
		t.Fatal(err)
	}
	if m.index != 3 || m.prefixLen != 24 || m.local != netip.MustParseAddr("203.0.113.2") {
		t.Fatalf("decodeAddr = %+v", m)
	}
	// Point-to-point (ppp): IFA_LOCAL is ours, IFA_ADDRESS the peer.
	m, err = decodeAddr(addrBody(4, 32, "198.51.100.7", "198.51.100.1"))
	if err != nil {
		t.Fatal(err)
	}
	if m.local != netip.MustParseAddr("198.51.100.7") || m.peer != netip.MustParseAddr("198.51.100.1") {
		t.Fatalf("ppp decodeAddr = %+v", m)
	}
	// Only IFA_ADDRESS: it is the local address.
	m, err = decodeAddr(addrBody(4, 16, "", "198.18.0.1"))
	if err != nil || m.local != netip.MustParseAddr("198.18.0.1") || m.peer.IsValid() {
		t.Fatalf("decodeAddr(no IFA_LOCAL) = %+v, %v", m, err)
	}
	bad := addrBody(3, 24, "203.0.113.2", "203.0.113.2")
	bad[1] = 33
	if _, err := decodeAddr(bad); err == nil {
		t.Error("prefix length 33 accepted")
	}
	if _, err := decodeAddr(cat(make([]byte, 8), attr(unix.IFA_LOCAL, []byte{1, 2, 3}))[:]); err != nil {
		// family 0 (not AF_INET) is skipped before attributes are read
		t.Errorf("non-IPv4 address: %v", err)
	}
	v4 := cat([]byte{unix.AF_INET, 24, 0, 0, 1, 0, 0, 0}, attr(unix.IFA_LOCAL, []byte{1, 2, 3}))
	if _, err := decodeAddr(v4); err == nil {
		t.Error("3-byte IPv4 address accepted")
	}
}

func TestDecodeRoute(t *testing.T) {
	b := routeBody(routeSpec{table: 1000, dst: "198.51.100.0/24", priority: 50, protocol: unix.RTPROT_STATIC,
		gw: "192.0.2.1", oif: 5, prefsrc: "192.0.2.2"})
	m, err := decodeRoute(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.table != 1000 || m.dst != netip.MustParsePrefix("198.51.100.0/24") || m.priority != 50 ||
		m.gw != netip.MustParseAddr("192.0.2.1") || m.oif != 5 || m.prefsrc != netip.MustParseAddr("192.0.2.2") {
		t.Fatalf("decodeRoute = %+v", m)
	}
	nhs, err := m.nexthops()
	if err != nil || len(nhs) != 1 || nhs[0].oif != 5 {
		t.Fatalf("nexthops = %+v, %v", nhs, err)
	}

	// Default route: no RTA_DST.
	m, err = decodeRoute(routeBody(routeSpec{table: unix.RT_TABLE_MAIN, gw: "192.0.2.1", oif: 2}))
	if err != nil || m.dst != netip.MustParsePrefix("0.0.0.0/0") {
		t.Fatalf("default route = %+v, %v", m, err)
	}

	// Multipath, one nexthop without gateway.
	m, err = decodeRoute(routeBody(routeSpec{table: 200, paths: []nexthop{
		{gw: netip.MustParseAddr("192.0.2.1"), oif: 2},
		{oif: 3, flags: unix.RTNH_F_DEAD},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	nhs, err = m.nexthops()
	if err != nil || len(nhs) != 2 || nhs[0].gw != netip.MustParseAddr("192.0.2.1") || nhs[1].oif != 3 ||
		nhs[1].gw.IsValid() || nhs[1].flags&unix.RTNH_F_DEAD == 0 {
		t.Fatalf("multipath nexthops = %+v, %v", nhs, err)
	}

	// Unreachable route: no nexthop at all.
	m, _ = decodeRoute(routeBody(routeSpec{table: 200, typ: unix.RTN_UNREACHABLE}))
	if nhs, err := m.nexthops(); err != nil || len(nhs) != 0 {
		t.Fatalf("unreachable nexthops = %+v, %v", nhs, err)
	}

	bad := routeBody(routeSpec{table: 200, dst: "198.51.100.0/24"})
	bad[1] = 40
	if _, err := decodeRoute(bad); err == nil {
		t.Error("dst_len 40 accepted")
	}
	mp := routeMsg{mpRaw: []byte{100, 0, 0, 0, 1, 0, 0, 0}}
	if _, err := mp.nexthops(); err == nil {
		t.Error("multipath entry longer than the attribute accepted")
	}
}

func TestNextMessage(t *testing.T) {
	d := datagram(
		nlmsg{typ: unix.RTM_NEWLINK, seq: 1, pid: 9, data: []byte{1, 2, 3}}, // padded to 4
		nlmsg{typ: unix.NLMSG_DONE, seq: 1, pid: 9, data: []byte{0, 0, 0, 0}},
	)
	m, rest, err := nextMessage(d)
	if err != nil || m.typ != unix.RTM_NEWLINK || len(m.data) != 3 || m.pid != 9 {
		t.Fatalf("first = %+v, %v", m, err)
	}
	m, rest, err = nextMessage(rest)
	if err != nil || m.typ != unix.NLMSG_DONE || rest != nil {
		t.Fatalf("second = %+v rest %x, %v", m, rest, err)
	}
	if _, _, err := nextMessage(d[:10]); err == nil {
		t.Error("short header accepted")
	}
	bad := append([]byte(nil), d...)
	binary.NativeEndian.PutUint32(bad[0:4], 4096)
	if _, _, err := nextMessage(bad); err == nil {
		t.Error("length beyond datagram accepted")
	}
}

// FuzzHandle feeds arbitrary bytes through framing, decoders and tracker:
// kernel input must never crash the daemon.
func FuzzHandle(f *testing.F) {
	f.Add(uint16(unix.RTM_NEWLINK), linkBody(0, 2, unix.IFF_UP, "wan0", operUp, 1500))
	f.Add(uint16(unix.RTM_NEWADDR), addrBody(2, 24, "203.0.113.2", "203.0.113.2"))
	f.Add(uint16(unix.RTM_NEWROUTE), routeBody(routeSpec{table: 100, gw: "192.0.2.1", oif: 2}))
	f.Add(uint16(unix.RTM_NEWROUTE), routeBody(routeSpec{table: 100, paths: []nexthop{{oif: 2}, {oif: 3}}}))
	f.Add(uint16(unix.RTM_NEWRULE), ruleBody(ruleSpec{priority: 10, table: 100, mark: 1}))
	f.Fuzz(func(t *testing.T, typ uint16, body []byte) {
		tr := newTracker(func(reactor.Event) {}, nil, nil, slog.New(slog.DiscardHandler))
		tr.beginResync()
		tr.beginDump(kindRoute)
		for _, ty := range []uint16{typ, unix.RTM_NEWLINK, unix.RTM_DELLINK, unix.RTM_NEWADDR, unix.RTM_DELADDR,
			unix.RTM_NEWROUTE, unix.RTM_DELROUTE, unix.RTM_NEWRULE, unix.RTM_DELRULE} {
			tr.handle(nlmsg{typ: ty, data: body}, false)
			tr.handle(nlmsg{typ: ty, flags: unix.NLM_F_REPLACE, data: body}, true)
		}
		tr.endDump(kindRoute)
		for b := body; len(b) > 0; {
			var err error
			if _, b, err = nextMessage(b); err != nil {
				break
			}
		}
	})
}

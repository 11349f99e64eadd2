package eventlog

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wanreact/wanreact/config"
	"github.com/wanreact/wanreact/reactor"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 123_000_000, time.UTC)

func ev(t *testing.T, wan string, p reactor.Payload) []byte {
	t.Helper()
	b, err := json.Marshal(reactor.Event{Time: t0, WAN: wan, Data: p})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFormat(t *testing.T) {
	dec := reactor.Decision{
		Transitions:   []reactor.Transition{{WAN: "isp1", From: reactor.Up, To: reactor.Down, Reason: "carrier lost"}},
		ActiveChanged: true, Active: []reactor.ActiveMember{{WAN: "isp2", Weight: 1}},
		Intents: []reactor.Intent{reactor.FlushConntrack{WAN: "isp1", Address: netip.MustParsePrefix("203.0.113.2/24"), Reason: "isp1 down"}},
	}
	decLine, _ := json.Marshal(dec.Record(t0))
	none, _ := json.Marshal(reactor.Decision{ActiveChanged: true}.Record(t0))
	for _, tc := range []struct {
		name string
		line []byte
		want string
	}{
		{"decision", decLine, "Nov 25 10:00:00.123 isp1     reactor/decision  isp1 up→down (carrier lost); active: isp2; flush_conntrack wan=isp1 address=203.0.113.2/24 mark=0x0/0x0 (isp1 down)"},
		{"no active WAN", none, "Nov 25 10:00:00.123 -        reactor/decision  active: none (no WAN can carry traffic)"},
		{"carrier", ev(t, "isp1", reactor.CarrierChange{Name: "wan0"}), "Nov 25 10:00:00.123 isp1     link/carrier_off  wan0 carrier lost"},
		{"link", ev(t, "", reactor.LinkChange{Index: 3, Name: "wan0", AdminUp: true}), "Nov 25 10:00:00.123 -        link/down         wan0 down (admin on, carrier off, oper off)"},
		{"probe lost", ev(t, "isp2", reactor.ProbeResult{Target: netip.MustParseAddr("198.51.100.1"), Seq: 7}), "isp2     probe/lost        198.51.100.1 lost (seq 7)"},
		{"probe reply", ev(t, "isp2", reactor.ProbeResult{Target: netip.MustParseAddr("198.51.100.1"), Seq: 8, OK: true, RTT: 1234567 * time.Nanosecond}), "probe/reply       198.51.100.1 reply in 1.23ms (seq 8)"},
		{"route", ev(t, "", reactor.RouteChange{Table: 11, Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("203.0.113.1"), Index: 3, Deleted: true}), "route/removed     table 11 default via 203.0.113.1 dev #3 removed"},
		{"lease", ev(t, "isp3", reactor.LeaseChange{Kind: "bound", Prefix: netip.MustParsePrefix("198.18.0.10/24"), Gateway: netip.MustParseAddr("198.18.0.1"), Lease: time.Hour}), "dhcp/bound        bound 198.18.0.10/24 via 198.18.0.1, lease 1h0m0s"},
		{"wifi", ev(t, "wifi1", reactor.WifiChange{Name: "wlan0", Kind: "signal", Signal: -71}), "wifi/signal       wlan0 signal -71 dBm"},
		{"config", ev(t, "", reactor.ConfigLoaded{Config: config.Config{WANs: []config.WAN{{Name: "isp1"}, {Name: "isp2"}}}}), "reactor/config    configuration loaded: 2 WANs (isp1, isp2)"},
		{"routing action", []byte(`{"time":"2026-11-25T10:00:00.123Z","source":"action","type":"routing","data":{"added":["a","b"],"removed":["c"],"replaced":null,"errors":[],"duration_us":850}}`), "action/routing    2 added, 1 removed, 0 replaced in 850µs"},
		{"hook action", []byte(`{"time":"2026-11-25T10:00:00.123Z","source":"action","type":"hook","wan":"isp1","data":{"hook":"10-notify","event":"down","result":"timeout","exit_code":-1,"duration_us":2000000,"output":"waiting\nmore"}}`), "isp1     action/hook       10-notify for down: timeout (exit -1) in 2s: waiting …"},
		{"not json", []byte("garbage"), "garbage"},
		{"error line", []byte(`{"error":"follower fell behind"}`), "error: follower fell behind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := FormatIn(tc.line, time.UTC)
			if !strings.Contains(got, tc.want) {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
			if strings.Contains(got, "\n") {
				t.Errorf("not one line: %q", got)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	dec, _ := json.Marshal(reactor.Decision{
		Transitions:   []reactor.Transition{{WAN: "isp1", From: reactor.Up, To: reactor.Down}},
		ActiveChanged: true, Active: []reactor.ActiveMember{{WAN: "isp2", Weight: 1}},
	}.Record(t0))
	probe := ev(t, "isp3", reactor.ProbeResult{Target: netip.MustParseAddr("198.51.100.1")})
	for _, tc := range []struct {
		line        []byte
		wan, source string
		want        bool
	}{
		{dec, "", "", true},
		{dec, "isp1", "", true},        // its transition
		{dec, "isp2", "", true},        // now active
		{dec, "isp3", "", false},       // not concerned
		{dec, "isp1", "reactor", true}, // both filters
		{dec, "isp1", "probe", false},  // wrong source
		{probe, "isp3", "probe", true}, // plain event
		{probe, "isp1", "", false},     // other WAN
		{[]byte("garbage"), "x", "", false},
	} {
		if got := Match(tc.line, tc.wan, tc.source); got != tc.want {
			t.Errorf("Match(%s, wan=%q, source=%q) = %v, want %v", tc.line, tc.wan, tc.source, got, tc.want)
		}
	}
}

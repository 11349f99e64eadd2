package dhcp

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/wanreact/wanreact/reactor"
)

// ack builds an ACK for 198.18.0.10 from 198.18.0.1 with the given options.
func ack(opts ...dhcpv4.Option) *dhcpv4.DHCPv4 {
	p := &dhcpv4.DHCPv4{
		OpCode:       dhcpv4.OpcodeBootReply,
		YourIPAddr:   net.IPv4(198, 18, 0, 10),
		ClientHWAddr: clientHW,
		Options:      dhcpv4.Options{},
	}
	p.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeAck))
	p.UpdateOption(dhcpv4.OptServerIdentifier(net.IPv4(198, 18, 0, 1)))
	for _, o := range opts {
		p.UpdateOption(o)
	}
	return p
}

func generic(code dhcpv4.OptionCode, b ...byte) dhcpv4.Option {
	return dhcpv4.Option{Code: code, Value: dhcpv4.OptionGeneric{Data: b}}
}

func TestLeaseFromAck(t *testing.T) {
	src := netip.MustParseAddr("198.18.0.2")
	tests := []struct {
		name  string
		p     *dhcpv4.DHCPv4
		src   netip.Addr
		check func(*Lease) bool
	}{
		{"classful mask when option 1 missing", ack(), src, func(l *Lease) bool { return l.Address.Bits() == 24 }},
		{"non-contiguous mask ignored", ack(generic(dhcpv4.OptionSubnetMask, 255, 0, 255, 0)), src, func(l *Lease) bool { return l.Address.Bits() == 24 }},
		{"mask applied", ack(dhcpv4.OptSubnetMask(net.CIDRMask(30, 32))), src, func(l *Lease) bool { return l.Address.Bits() == 30 }},
		{"default lease one hour", ack(), src, func(l *Lease) bool {
			return l.Duration == time.Hour && l.T1 == 30*time.Minute && l.T2 == 52*time.Minute+30*time.Second
		}},
		{"tiny lease stretched", ack(dhcpv4.OptIPAddressLeaseTime(time.Second)), src, func(l *Lease) bool { return l.Duration == MinLeaseTime && l.T1 < l.T2 && l.T2 < l.Duration }},
		{"T1/T2 from options", ack(dhcpv4.OptIPAddressLeaseTime(1000*time.Second), dhcpv4.OptRenewTimeValue(100*time.Second), dhcpv4.OptRebindingTimeValue(200*time.Second)), src,
			func(l *Lease) bool { return l.T1 == 100*time.Second && l.T2 == 200*time.Second }},
		{"T1 beyond T2 replaced", ack(dhcpv4.OptIPAddressLeaseTime(1000*time.Second), dhcpv4.OptRenewTimeValue(900*time.Second), dhcpv4.OptRebindingTimeValue(200*time.Second)), src,
			func(l *Lease) bool { return l.T1 == 100*time.Second && l.T2 == 200*time.Second }},
		{"T2 beyond lease replaced", ack(dhcpv4.OptIPAddressLeaseTime(1000*time.Second), dhcpv4.OptRebindingTimeValue(2000*time.Second)), src,
			func(l *Lease) bool { return l.T1 == 500*time.Second && l.T2 == 875*time.Second }},
		{"infinite lease", ack(generic(dhcpv4.OptionIPAddressLeaseTime, 0xff, 0xff, 0xff, 0xff)), src, func(l *Lease) bool { return l.Duration == 0xffffffff*time.Second }},
		{"server from IP source without option 54", func() *dhcpv4.DHCPv4 { p := ack(); p.Options.Del(dhcpv4.OptionServerIdentifier); return p }(), src,
			func(l *Lease) bool { return l.Server == src }},
		{"shell metacharacters dropped", ack(dhcpv4.OptDomainName("x.org; rm -rf /"), dhcpv4.OptHostName("host$(id)")), src,
			func(l *Lease) bool { return l.DomainName == "" && l.HostName == "" }},
		{"names kept", ack(dhcpv4.OptDomainName("isp.example"), dhcpv4.OptHostName("cpe-1\x00")), src,
			func(l *Lease) bool { return l.DomainName == "isp.example" && l.HostName == "cpe-1" }},
		{"mtu below 68 dropped", ack(generic(dhcpv4.OptionInterfaceMTU, 0, 20)), src, func(l *Lease) bool { return l.MTU == 0 }},
		{"mtu kept", ack(generic(dhcpv4.OptionInterfaceMTU, 0x05, 0xdc)), src, func(l *Lease) bool { return l.MTU == 1500 }},
		{"bad router and dns entries skipped", ack(generic(dhcpv4.OptionRouter, 0, 0, 0, 0, 198, 18, 0, 1, 9), generic(dhcpv4.OptionDomainNameServer, 224, 0, 0, 1, 192, 0, 2, 53)), src,
			func(l *Lease) bool {
				return slices.Equal(l.Routers, []netip.Addr{netip.MustParseAddr("198.18.0.1")}) && slices.Equal(l.DNS, []netip.Addr{netip.MustParseAddr("192.0.2.53")})
			}},
		{"malformed option 121 falls back to option 3", ack(dhcpv4.OptRouter(net.IPv4(198, 18, 0, 1)), generic(dhcpv4.OptionClasslessStaticRoute, 24, 198, 51, 100, 198)), src,
			func(l *Lease) bool {
				return l.ClasslessRoutes == nil && l.Gateway() == netip.MustParseAddr("198.18.0.1")
			}},
		{"option 121 without default: no gateway", ack(dhcpv4.OptRouter(net.IPv4(198, 18, 0, 1)), generic(dhcpv4.OptionClasslessStaticRoute, 24, 198, 51, 100, 198, 18, 0, 1)), src,
			func(l *Lease) bool { return !l.Gateway().IsValid() && len(l.ExtraRoutes()) == 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := leaseFromAck(tc.p, tc.src)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(l) {
				t.Fatalf("lease %+v", l)
			}
			l.Acquired = epoch
			if err := l.validate(); err != nil {
				t.Fatalf("decoded lease does not validate: %v", err)
			}
		})
	}
}

func TestLeaseFromAckRejects(t *testing.T) {
	for name, p := range map[string]*dhcpv4.DHCPv4{
		"zero yiaddr":      func() *dhcpv4.DHCPv4 { p := ack(); p.YourIPAddr = net.IPv4zero; return p }(),
		"no yiaddr":        func() *dhcpv4.DHCPv4 { p := ack(); p.YourIPAddr = nil; return p }(),
		"broadcast yiaddr": func() *dhcpv4.DHCPv4 { p := ack(); p.YourIPAddr = net.IPv4bcast; return p }(),
		"loopback yiaddr":  func() *dhcpv4.DHCPv4 { p := ack(); p.YourIPAddr = net.IPv4(127, 0, 0, 1); return p }(),
		"subnet broadcast": func() *dhcpv4.DHCPv4 {
			p := ack(dhcpv4.OptSubnetMask(net.CIDRMask(24, 32)))
			p.YourIPAddr = net.IPv4(198, 18, 0, 255)
			return p
		}(),
		"network address": func() *dhcpv4.DHCPv4 {
			p := ack(dhcpv4.OptSubnetMask(net.CIDRMask(24, 32)))
			p.YourIPAddr = net.IPv4(198, 18, 0, 0)
			return p
		}(),
		"no server at all": func() *dhcpv4.DHCPv4 { p := ack(); p.Options.Del(dhcpv4.OptionServerIdentifier); return p }(),
	} {
		if l, err := leaseFromAck(p, netip.Addr{}); err == nil {
			t.Errorf("%s: accepted as %+v", name, l)
		}
	}
}

func TestClasslessRoutes(t *testing.T) {
	// RFC 3442 section 3's examples, plus host and on-link routes.
	b := []byte{
		0, 10, 0, 0, 1, // default via 10.0.0.1
		8, 10, 10, 0, 0, 2, // 10/8
		24, 192, 168, 1, 10, 0, 0, 3,
		32, 203, 0, 113, 9, 0, 0, 0, 0,
		9, 129, 255, 198, 18, 0, 1, // 129.128/9 with a stray bit cleared
	}
	got, err := DecodeClasslessRoutes(b)
	if err != nil {
		t.Fatal(err)
	}
	want := []reactor.StaticRoute{
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.0.0.1")},
		{Dst: netip.MustParsePrefix("10.0.0.0/8"), Gateway: netip.MustParseAddr("10.0.0.2")},
		{Dst: netip.MustParsePrefix("192.168.1.0/24"), Gateway: netip.MustParseAddr("10.0.0.3")},
		{Dst: netip.MustParsePrefix("203.0.113.9/32")},
		{Dst: netip.MustParsePrefix("129.128.0.0/9"), Gateway: netip.MustParseAddr("198.18.0.1")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	again, err := DecodeClasslessRoutes(EncodeClasslessRoutes(got))
	if err != nil || !reflect.DeepEqual(again, want) {
		t.Fatalf("round trip: %v %v", again, err)
	}
	var tooMany []byte
	for i := 0; i <= MaxClasslessRoutes; i++ {
		tooMany = append(tooMany, 32, 203, 0, 113, byte(i), 198, 18, 0, 1)
	}
	if r, err := DecodeClasslessRoutes(tooMany[:len(tooMany)-9]); err != nil || len(r) != MaxClasslessRoutes {
		t.Fatalf("%d routes refused: %v", MaxClasslessRoutes, err)
	}
	for _, bad := range [][]byte{{33, 1, 2, 3, 4, 5, 6, 7, 8}, {24, 1, 2, 3, 4, 5, 6}, {0, 1, 2, 3}, {8}, tooMany} {
		if r, err := DecodeClasslessRoutes(bad); err == nil {
			t.Errorf("%v decoded as %v", bad, r)
		}
	}
}

func testLease() *Lease {
	return &Lease{
		WAN: "isp1", Interface: "wan0", HWAddr: clientHW.String(),
		Address:         netip.MustParsePrefix("198.18.0.10/24"),
		Routers:         []netip.Addr{netip.MustParseAddr("198.18.0.1")},
		Server:          netip.MustParseAddr("198.18.0.1"),
		ServerHWAddr:    "02:00:c6:12:00:01",
		DNS:             []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("192.0.2.54")},
		DomainName:      "isp.example",
		HostName:        "cpe",
		MTU:             1492,
		ClasslessRoutes: []reactor.StaticRoute{{Dst: netip.MustParsePrefix("198.51.100.0/24"), Gateway: netip.MustParseAddr("198.18.0.1")}, {Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("198.18.0.1")}},
		Duration:        time.Hour, T1: 30 * time.Minute, T2: 52*time.Minute + 30*time.Second,
		Acquired: epoch,
	}
}

func TestLeaseFileRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "leases")
	if l, err := LoadLease(dir, "isp1"); l != nil || err != nil {
		t.Fatalf("missing file: %v %v", l, err)
	}
	l := testLease()
	if err := StoreLease(dir, l); err != nil {
		t.Fatal(err)
	}
	l2 := *l
	l2.Address = netip.MustParsePrefix("198.18.0.11/24")
	if err := StoreLease(dir, &l2); err != nil { // overwrite
		t.Fatal(err)
	}
	got, err := LoadLease(dir, "isp1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, &l2) {
		t.Fatalf("loaded %+v, want %+v", got, &l2)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "isp1.lease" {
		t.Fatalf("directory holds %v, want only isp1.lease (no temp files)", ents)
	}
	if fi, _ := os.Stat(LeasePath(dir, "isp1")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("lease file mode %v", fi.Mode())
	}
	if err := RemoveLease(dir, "isp1"); err != nil {
		t.Fatal(err)
	}
	if err := RemoveLease(dir, "isp1"); err != nil {
		t.Fatalf("removing a missing lease: %v", err)
	}

	// Truncated or tampered files are refused, not half-used.
	good, err := os.ReadFile(filepath.Join("testdata", "isp1.lease"))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"truncated":     good[:len(good)/2],
		"bad address":   []byte(strings.Replace(string(good), "198.18.0.10/24", "0.0.0.0/24", 1)),
		"t1 after t2":   []byte(strings.Replace(string(good), `"t1_ns": 1800000000000`, `"t1_ns": 3200000000000`, 1)),
		"shell in name": []byte(strings.Replace(string(good), `"isp.example"`, `"a;b"`, 1)),
	} {
		if err := os.WriteFile(LeasePath(dir, "isp1"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		if l, err := LoadLease(dir, "isp1"); err == nil {
			t.Errorf("%s: loaded %+v", name, l)
		}
	}
	if err := os.WriteFile(LeasePath(dir, "isp1"), good, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadLease(dir, "isp1"); err != nil {
		t.Fatalf("testdata/isp1.lease: %v", err)
	}
}

func TestHookEnv(t *testing.T) {
	old := testLease()
	nl := testLease()
	nl.Address = netip.MustParsePrefix("198.18.0.11/24")
	nl.Acquired = epoch.Add(time.Minute)
	env := HookEnv(old, nl, "RENEW")
	want := []string{
		"reason=RENEW",
		"interface=wan0",
		"wanreact_wan=isp1",
		"new_ip_address=198.18.0.11",
		"new_subnet_mask=255.255.255.0",
		"new_network_number=198.18.0.0",
		"new_broadcast_address=198.18.0.255",
		"new_routers=198.18.0.1",
		"new_domain_name_servers=192.0.2.53 192.0.2.54",
		"new_domain_name=isp.example",
		"new_host_name=cpe",
		"new_interface_mtu=1492",
		"new_rfc3442_classless_static_routes=24 198 51 100 198 18 0 1 0 198 18 0 1",
		"new_dhcp_lease_time=3600",
		"new_dhcp_renewal_time=1800",
		"new_dhcp_rebinding_time=3150",
		"new_dhcp_server_identifier=198.18.0.1",
		"new_expiry=" + itoa(epoch.Add(61*time.Minute).Unix()),
		"old_ip_address=198.18.0.10",
		"old_expiry=" + itoa(epoch.Add(time.Hour).Unix()),
	}
	for _, w := range want {
		if !slices.Contains(env, w) {
			t.Errorf("missing %q in %v", w, env)
		}
	}
	if !slices.IsSorted(env) {
		t.Error("env not sorted")
	}
	exp := HookEnv(old, nil, "EXPIRE")
	for _, e := range exp {
		if strings.HasPrefix(e, "new_") {
			t.Errorf("EXPIRE env has %q", e)
		}
	}
	if !slices.Contains(exp, "old_ip_address=198.18.0.10") || !slices.Contains(exp, "interface=wan0") {
		t.Errorf("EXPIRE env %v", exp)
	}
	if f := HookEnv(nil, nil, "FAIL"); !slices.Equal(f, []string{"reason=FAIL"}) {
		t.Errorf("FAIL env %v", f)
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func TestNewValidates(t *testing.T) {
	for name, o := range map[string]Options{
		"no wan":         {Interface: "wan0"},
		"path in wan":    {WAN: "../etc/x", Interface: "wan0"},
		"hidden wan":     {WAN: ".x", Interface: "wan0"},
		"no interface":   {WAN: "isp1"},
		"long interface": {WAN: "isp1", Interface: "a-very-long-ifname"},
		"bad hostname":   {WAN: "isp1", Interface: "wan0", Hostname: "a;b"},
		"long client id": {WAN: "isp1", Interface: "wan0", ClientID: make([]byte, 256)},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c, err := New(Options{WAN: "isp1", Interface: "wan0", Hostname: "cpe-1"})
	if err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); st.State != "LINK-DOWN" || st.WAN != "isp1" || st.Address.IsValid() {
		t.Fatalf("initial status %+v", st)
	}
	// Calls before Run neither block nor get lost.
	for i := 0; i < 2*maxInputs; i++ {
		c.LinkChanged(i%2 == 0)
	}
	c.Revalidate()
	if len(c.inputs) != maxInputs || c.inputs[maxInputs-1] != inputRevalidate {
		t.Fatalf("queued inputs %v", c.inputs)
	}
}

package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseExample(t *testing.T) {
	c, err := Load("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.WANs) != 3 || c.LAN[0] != "lan0" || c.MetricsListen != "127.0.0.1:9343" {
		t.Fatalf("parsed %+v", c)
	}
	w := c.WANs[0]
	if w.Name != "isp1" || w.Table != 10 || w.Weight != 2 || w.Address != netip.MustParsePrefix("203.0.113.2/24") ||
		w.Gateway != netip.MustParseAddr("203.0.113.1") || w.Probe.Timeout != 600*time.Millisecond {
		t.Fatalf("isp1 = %+v", w)
	}
	if d := c.WANs[1]; d.Weight != 1 || d.Probe.Interval != DefaultInterval || d.Probe.Timeout != DefaultTimeout ||
		d.Probe.UpAfter != DefaultUpAfter || d.Probe.DegradedLoss != DefaultDegradedLoss {
		t.Fatalf("defaults not applied: %+v", d.Probe)
	}
	if wf := c.WANs[2]; wf.Wifi == nil || wf.Wifi.MinSignal != -75 || wf.Wifi.Hysteresis != DefaultHysteresis ||
		wf.DHCPOptions == nil || wf.DHCPOptions.Hostname != "router" || wf.Probe.Interval != time.Second {
		t.Fatalf("wifi1 = %+v", wf)
	}
	// lan: is set, so balancing is on by default.
	if c.Routing != (Routing{ActiveTable: 200, RulePriority: 10000, MarkMask: 0xff00, Slots: DefaultSlots, SlotTable: DefaultSlotTable}) {
		t.Fatalf("routing defaults = %+v", c.Routing)
	}
}

// Every problem is reported with the position of the offending text.
func TestParseErrorsHavePositions(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", `
wans:
  - name: a
    interfce: wan0
`, `f.yaml:4:5: unknown key "interfce" in wan`},
		{"bad duration", `
wans:
  - name: a
    interface: wan0
    table: 10
    addressing: external
    probe:
      targets: [198.51.100.1]
      interval: 200 ms
`, `f.yaml:9:17: bad duration "200 ms"`},
		{"duplicate table", `
wans:
  - {name: a, interface: wan0, table: 10, addressing: external, probe: {targets: [198.51.100.1]}}
  - {name: b, interface: wan1, table: 10, addressing: external, probe: {targets: [198.51.100.1]}}
`, `f.yaml:4:39: duplicate table 10`},
		{"static without gateway", `
wans:
  - name: a
    interface: wan0
    table: 10
    addressing: static
    address: 203.0.113.2/24
    probe: {targets: [198.51.100.1]}
`, `f.yaml:6:17: WAN "a": addressing static needs gateway`},
		{"duplicate name", `
wans:
  - {name: a, interface: wan0, table: 10, addressing: external, probe: {targets: [198.51.100.1]}}
  - {name: a, interface: wan1, table: 11, addressing: external, probe: {targets: [198.51.100.1]}}
`, `f.yaml:4:12: duplicate WAN name "a"`},
		{"duplicate interface", `
wans:
  - {name: a, interface: wan0, table: 10, addressing: external, probe: {targets: [198.51.100.1]}}
  - {name: b, interface: wan0, table: 11, addressing: external, probe: {targets: [198.51.100.1]}}
`, `f.yaml:4:26: interface "wan0" is already used`},
		{"main table", `
wans:
  - {name: a, interface: wan0, table: 254, addressing: external, probe: {targets: [198.51.100.1]}}
`, `f.yaml:3:39: table 254 is the kernel's "main" table`},
		{"wrong type", `
wans:
  - {name: a, interface: wan0, table: ten, addressing: external, probe: {targets: [198.51.100.1]}}
`, `f.yaml:3:39: expected an integer, got "ten"`},
		{"bad target", `
wans:
  - {name: a, interface: wan0, table: 10, addressing: external, probe: {targets: [198.51.100.300]}}
`, `f.yaml:3:83: "198.51.100.300" is not an IPv4 address`},
		{"yaml syntax", "wans:\n\t- name: a\n", `f.yaml:2:1: YAML: found character that cannot start any token`},
		{"duplicate key", `
wans:
  - name: a
    name: b
`, `f.yaml:4:5: duplicate key "name" in wan`},
		{"bad name", `
wans:
  - {name: ISP_One_With_A_Long_Name, interface: wan0, table: 10, addressing: external, probe: {targets: [198.51.100.1]}}
`, `f.yaml:3:12: WAN name "ISP_One_With_A_Long_Name" must match`},
		{"not a list", `
wans: isp1
`, `f.yaml:2:7: expected a list, got "isp1"`},
		{"no wans", `
control_socket: /tmp/x.sock
`, `f.yaml:2:1: no wans`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tc.yaml))
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("err = %v, want Problems", err)
			}
			if tc.name == "bad target" && len(ps) != 1 {
				t.Fatalf("one bad target reported as %d problems:\n%s", len(ps), err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got:\n%s\nwant a line containing %q", err, tc.want)
			}
		})
	}
}

func TestParseReportsAllProblems(t *testing.T) {
	_, err := Parse("f.yaml", []byte(`
wans:
  - name: a
    interface: wan0
    table: 10
    addressing: sttic
    probe: {targets: [198.51.100.1], interval: fast}
    color: blue
`))
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 3 {
		t.Fatalf("want 3 problems, got %v", err)
	}
	if ps[0].Line != 6 || ps[1].Line != 7 || ps[2].Line != 8 {
		t.Fatalf("problems not in file order: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("wans:\n  - {name: a, interface: wan0, table: 10, addressing: external, probe: {targets: [198.51.100.1]}}\n"))
	f.Add([]byte("wans: [&a {name: *a}]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("f.yaml", b)
		if (c == nil) == (err == nil) {
			t.Fatalf("config %v with error %v", c, err)
		}
	})
}

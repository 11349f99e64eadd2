package firewall

import (
	"slices"
	"strings"
	"testing"

	"github.com/wanreact/wanreact/actions"
	"github.com/wanreact/wanreact/config"
)

func testSpec() Spec {
	return Spec{
		Mask: 0xff00, Slots: 4, LAN: []string{"lan0", "vlan+"},
		WANs: []WAN{{Name: "a", Interface: "wan0", Mark: 0x100}, {Name: "b", Interface: "wan1", Mark: 0x200, NAT: true}},
	}
}

func lines(t Table) []string {
	var out []string
	for _, c := range t.Chains {
		for _, r := range c.Rules {
			out = append(out, "-A "+c.Name+" "+r)
		}
	}
	for _, j := range t.Jumps {
		out = append(out, j.Rule())
	}
	return out
}

func TestRulesetModel(t *testing.T) {
	rs, err := testSpec().Ruleset()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"-A WANREACT_PRE -i wan0 -m conntrack --ctstate NEW -j CONNMARK --set-xmark 0x100/0xff00",
		"-A WANREACT_PRE -i wan0 -j RETURN",
		"-A WANREACT_PRE -i wan1 -m conntrack --ctstate NEW -j CONNMARK --set-xmark 0x200/0xff00",
		"-A WANREACT_PRE -i wan1 -j RETURN",
		"-A WANREACT_PRE -j CONNMARK --restore-mark --nfmask 0xff00 --ctmask 0xff00",
		"-A WANREACT_PRE -m mark ! --mark 0x0/0xff00 -j RETURN",
		"-A WANREACT_PRE -i lan0 -m addrtype --dst-type UNICAST -m conntrack --ctstate NEW -j WANREACT_SLOT",
		"-A WANREACT_PRE -i vlan+ -m addrtype --dst-type UNICAST -m conntrack --ctstate NEW -j WANREACT_SLOT",
		"-A WANREACT_OUT -m mark ! --mark 0x0/0xff00 -j RETURN",
		"-A WANREACT_OUT -j CONNMARK --restore-mark --nfmask 0xff00 --ctmask 0xff00",
		"-A WANREACT_OUT -m mark ! --mark 0x0/0xff00 -j RETURN",
		"-A WANREACT_OUT -m addrtype --dst-type UNICAST -m conntrack --ctstate NEW -j WANREACT_SLOTOUT",
		"-A WANREACT_POST -m connmark ! --mark 0x0/0xff00 -j RETURN",
		"-A WANREACT_POST -o wan0 -j CONNMARK --set-xmark 0x100/0xff00",
		"-A WANREACT_POST -o wan1 -j CONNMARK --set-xmark 0x200/0xff00",
		"-A WANREACT_SLOT -m statistic --mode nth --every 4 --packet 0 -j MARK --set-xmark 0x8300/0xff00",
		"-A WANREACT_SLOT -m statistic --mode nth --every 4 --packet 1 -j MARK --set-xmark 0x8200/0xff00",
		"-A WANREACT_SLOT -m statistic --mode nth --every 4 --packet 2 -j MARK --set-xmark 0x8000/0xff00",
		"-A WANREACT_SLOT -m statistic --mode nth --every 4 --packet 3 -j MARK --set-xmark 0x8100/0xff00",
		"-A WANREACT_SLOTOUT -m statistic --mode nth --every 4 --packet 0 -j MARK --set-xmark 0x8300/0xff00",
		"-A WANREACT_SLOTOUT -m statistic --mode nth --every 4 --packet 1 -j MARK --set-xmark 0x8200/0xff00",
		"-A WANREACT_SLOTOUT -m statistic --mode nth --every 4 --packet 2 -j MARK --set-xmark 0x8000/0xff00",
		"-A WANREACT_SLOTOUT -m statistic --mode nth --every 4 --packet 3 -j MARK --set-xmark 0x8100/0xff00",
		"-A PREROUTING -j WANREACT_PRE",
		"-A OUTPUT -j WANREACT_OUT",
		"-A POSTROUTING -j WANREACT_POST",
	}
	if got := lines(rs.Table("mangle")); !slices.Equal(got, want) {
		t.Errorf("mangle:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := lines(rs.Table("nat")); !slices.Equal(got, []string{"-A WANREACT_NAT -o wan1 -j MASQUERADE", "-A POSTROUTING -j WANREACT_NAT"}) {
		t.Errorf("nat: %q", got)
	}
}

// The firewall must not depend on anything but the configuration: the
// acceptance test compares iptables-save across failovers, and this is why
// it can hold.
func TestRulesetIsDeterministic(t *testing.T) {
	a, _ := testSpec().Ruleset()
	b, _ := testSpec().Ruleset()
	if !equalRulesets(a, b) {
		t.Fatal("same spec, different rulesets")
	}
}

func TestRulesetOnlyWhatIsNeeded(t *testing.T) {
	s := testSpec()
	s.Slots = 0
	rs, err := s.Ruleset()
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Table("mangle").Chains) != 0 || len(rs.Table("nat").Chains) != 1 || !s.Enabled() {
		t.Errorf("slots 0 with NAT: %+v", rs)
	}
	s.WANs[1].NAT = false
	if s.Enabled() {
		t.Error("no slots and no NAT still enabled")
	}
	rs, _ = s.Ruleset()
	if len(rs.Table("mangle").Chains)+len(rs.Table("nat").Chains) != 0 {
		t.Errorf("disabled spec has chains: %+v", rs)
	}
}

func TestSlotRulesCoverEverySlotOnce(t *testing.T) {
	for _, n := range []int{1, 2, 7, 60, 98} {
		order := slotOrder(n)
		sorted := slices.Sorted(slices.Values(order))
		for i, v := range sorted {
			if v != i {
				t.Fatalf("slotOrder(%d) is not a permutation: %v", n, order)
			}
		}
		rules := slotRules(n, 0xff00)
		if len(rules) != n {
			t.Fatalf("%d slots: %d rules", n, len(rules))
		}
		marks := map[string]bool{}
		for _, r := range rules {
			marks[r[strings.LastIndex(r, " ")+1:]] = true
		}
		if len(marks) != n {
			t.Errorf("%d slots: %d distinct marks", n, len(marks))
		}
	}
	// Interleaved slots (the reducer's 2:1 pattern a b a a b a ...) read
	// with a stride of 3, as a client making two DNS queries before each
	// connection would: the shuffle keeps both WANs in use.
	order := slotOrder(60)
	hits := map[bool]int{}
	for k := 2; k < 60; k += 3 {
		hits[order[k]%3 == 1]++ // slot s%3 == 1 is WAN b in that pattern
	}
	if hits[true] == 0 || hits[false] == 0 {
		t.Errorf("stride-3 traffic lands on one WAN only: %v", hits)
	}
}

func TestSpecValidation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Spec)
		want   string
	}{
		{"injection in a LAN name", func(s *Spec) { s.LAN = []string{"lan0 -j ACCEPT"} }, "not a name"},
		{"newline in a WAN name", func(s *Spec) { s.WANs[0].Interface = "wan0\nCOMMIT" }, "not a name"},
		{"wildcard WAN", func(s *Spec) { s.WANs[0].Interface = "wan+" }, "not a name"},
		{"mask without room", func(s *Spec) { s.Mask = 0x300 }, "no room"},
		{"slot mark as WAN mark", func(s *Spec) { s.WANs[0].Mark = actions.SlotMark(0xff00, 0) }, "not a WAN mark"},
		{"mark outside the mask", func(s *Spec) { s.WANs[0].Mark = 0x1 }, "not a WAN mark"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testSpec()
			tc.mutate(&s)
			if _, err := s.Ruleset(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestFromConfig(t *testing.T) {
	c, err := config.Parse("f.yaml", []byte(`
lan: [lan0]
wans:
  - {name: a, interface: wan0, table: 10, addressing: external, probe: {targets: [198.51.100.1]}}
  - {name: b, interface: wan1, table: 11, addressing: external, nat: true, probe: {targets: [198.51.100.1]}}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := FromConfig(*c)
	if s.Slots != 60 || s.Mask != 0xff00 || s.WANs[0].Mark != 0x100 || s.WANs[1].Mark != 0x200 || !s.WANs[1].NAT || s.LAN[0] != "lan0" {
		t.Errorf("spec %+v", s)
	}
	if _, err := s.Ruleset(); err != nil {
		t.Error(err)
	}
}

func TestParseSaveAndScript(t *testing.T) {
	save := `# Generated by iptables-save
*mangle
:PREROUTING ACCEPT [10:200]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:USER - [0:0]
:WANREACT_PRE - [0:0]
:WANREACT_OLD - [0:0]
-A PREROUTING -j WANREACT_PRE
-A PREROUTING -i lan0 -j MARK --set-xmark 0x1/0x1
-A PREROUTING -j WANREACT_PRE
-A USER -g WANREACT_OLD
-A WANREACT_PRE -j RETURN
-A WANREACT_OLD -j WANREACT_PRE
COMMIT
`
	st := parseSave([]byte(save))
	if !slices.Equal(st.order, []string{"WANREACT_PRE", "WANREACT_OLD"}) || len(st.chains["WANREACT_PRE"]) != 1 {
		t.Fatalf("chains %v %v", st.order, st.chains)
	}
	if !slices.Equal(st.refs, []string{"-A PREROUTING -j WANREACT_PRE", "-A PREROUTING -j WANREACT_PRE", "-A USER -g WANREACT_OLD"}) {
		t.Fatalf("refs %q", st.refs)
	}
	want := Table{Name: "mangle", Chains: []Chain{{Name: ChainPre, Rules: []string{"-j RETURN"}}},
		Jumps: []Jump{{From: "PREROUTING", To: ChainPre, First: true}}}
	why := st.differs(stateOf(want), want)
	for _, w := range []string{"stale chain WANREACT_OLD", `2 jumps "-A PREROUTING -j WANREACT_PRE"`, `stray jump "-A USER -g WANREACT_OLD"`} {
		if !strings.Contains(why, w) {
			t.Errorf("differs = %q, lacks %q", why, w)
		}
	}
	script, _ := restoreScript(want, st)
	wantScript := `*mangle
:WANREACT_PRE - [0:0]
-D PREROUTING -j WANREACT_PRE
-D USER -g WANREACT_OLD
-A WANREACT_PRE -j RETURN
-F WANREACT_OLD
-X WANREACT_OLD
COMMIT
`
	if string(script) != wantScript {
		t.Errorf("script:\n%s\nwant:\n%s", script, wantScript)
	}
	// A matching state needs nothing.
	good := parseSave([]byte("*mangle\n:WANREACT_PRE - [0:0]\n-A PREROUTING -j WANREACT_PRE\n-A WANREACT_PRE -j RETURN\nCOMMIT\n"))
	if why := good.differs(stateOf(want), want); why != "" {
		t.Errorf("identical state differs: %s", why)
	}
}

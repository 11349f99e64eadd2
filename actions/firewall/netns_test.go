package firewall

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// testNS is a network namespace private to one test, deleted on cleanup
// even when the test fails (which also drops its whole ruleset).
func testNS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces")
	}
	for _, tool := range []string{"ip", "iptables-save", "iptables-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "wrfw-" + hex.EncodeToString(b) + "-rtr"
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", name, err, out)
		}
	})
	return name
}

func nsExec(t *testing.T, ns string, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return string(out)
}

var countersRE = regexp.MustCompile(`\[\d+:\d+\]`)

// saveAll is iptables-save without comments and counters: what the
// acceptance criteria compare.
func saveAll(t *testing.T, ns string) string {
	t.Helper()
	var keep []string
	for _, l := range strings.Split(nsExec(t, ns, "", "iptables-save"), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			keep = append(keep, countersRE.ReplaceAllString(l, "[0:0]"))
		}
	}
	return strings.Join(keep, "\n")
}

// userLines are the rules that are not ours (no WANREACT anywhere in them).
func userLines(save string) []string {
	var out []string
	for _, l := range strings.Split(save, "\n") {
		if !strings.Contains(l, ChainPrefix) {
			out = append(out, l)
		}
	}
	return out
}

const userRules = `*mangle
:USERMARK - [0:0]
-A PREROUTING -i lan0 -j USERMARK
-A USERMARK -p tcp --dport 22 -j MARK --set-xmark 0x1/0x1
COMMIT
*nat
-A POSTROUTING -o wan+ -j MASQUERADE
COMMIT
`

func TestInstallCheckRepairRemove(t *testing.T) {
	ns := testNS(t)
	nsExec(t, ns, userRules, "iptables-restore", "--noflush")
	userBefore := userLines(saveAll(t, ns))
	opts := Options{Wrap: []string{"ip", "netns", "exec", ns}}
	m := New(opts)
	spec := testSpec()

	res, err := m.Apply(spec)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Changed, []string{"mangle", "nat"}) || res.Lines != 28 {
		t.Errorf("first apply: %+v", res)
	}
	if len(m.printed) != 0 {
		t.Errorf("iptables prints the generated rules differently: %+v", m.printed)
	}
	installed := saveAll(t, ns)
	rs, _ := spec.Ruleset()
	for _, l := range append(lines(rs.Table("mangle")), lines(rs.Table("nat"))...) {
		if !strings.Contains(installed, l+"\n") {
			t.Errorf("iptables-save lacks %q", l)
		}
	}
	// The mangle jumps are first (before the user's), the nat one last.
	if !strings.Contains(installed, "-A PREROUTING -j WANREACT_PRE\n-A PREROUTING -i lan0 -j USERMARK") ||
		!strings.Contains(installed, "-A POSTROUTING -o wan+ -j MASQUERADE\n-A POSTROUTING -j WANREACT_NAT") {
		t.Errorf("jump positions:\n%s", installed)
	}

	t.Run("steady state and restart write nothing", func(t *testing.T) {
		for _, mgr := range []*Manager{m, New(opts)} {
			res, err := mgr.Apply(spec)
			if err != nil || len(res.Changed) != 0 {
				t.Errorf("apply on an installed firewall: %+v %v", res, err)
			}
		}
		if got := saveAll(t, ns); got != installed {
			t.Errorf("ruleset changed:\n%s\nwas:\n%s", got, installed)
		}
	})

	t.Run("check repairs what others broke", func(t *testing.T) {
		for _, breakIt := range [][]string{
			{"iptables", "-t", "mangle", "-F", ChainPre},
			{"iptables", "-t", "mangle", "-D", "OUTPUT", "-j", ChainOut},
			{"iptables", "-t", "mangle", "-I", "POSTROUTING", "-j", ChainPost},
			{"iptables", "-t", "mangle", "-R", ChainSlot, "2", "-j", "ACCEPT"},
			{"iptables", "-t", "nat", "-F"},
			{"iptables", "-t", "mangle", "-N", "WANREACT_STALE"},
		} {
			nsExec(t, ns, "", breakIt...)
			res, err := m.Check()
			if err != nil || len(res.Changed) != 1 {
				t.Errorf("after %v: check %+v %v", breakIt, res, err)
			}
			t.Logf("after %v: %s", breakIt[3:], strings.Join(res.Reasons, "; "))
			got := saveAll(t, ns)
			if breakIt[2] == "nat" && breakIt[3] == "-F" {
				// The flush took the user's MASQUERADE too; that one is
				// not ours to restore.
				nsExec(t, ns, "", "iptables", "-t", "nat", "-D", "POSTROUTING", "-j", ChainNAT)
				nsExec(t, ns, "", "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan+", "-j", "MASQUERADE")
				nsExec(t, ns, "", "iptables", "-t", "nat", "-A", "POSTROUTING", "-j", ChainNAT)
				got = saveAll(t, ns)
			}
			if got != installed {
				t.Errorf("after %v and a check:\n%s\nwant:\n%s", breakIt, got, installed)
			}
		}
	})

	t.Run("reload without NAT removes only our nat chain", func(t *testing.T) {
		s2 := testSpec()
		s2.WANs[1].NAT = false
		res, err := m.Apply(s2)
		if err != nil || !slices.Equal(res.Changed, []string{"nat"}) {
			t.Fatalf("apply: %+v %v", res, err)
		}
		got := saveAll(t, ns)
		if strings.Contains(got, ChainNAT) || !strings.Contains(got, "-A POSTROUTING -o wan+ -j MASQUERADE") {
			t.Errorf("nat after reload:\n%s", got)
		}
		if _, err := m.Apply(spec); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("remove leaves the user's rules", func(t *testing.T) {
		var removed []string
		if err := Remove(opts, func(s string) { removed = append(removed, s) }); err != nil {
			t.Fatal(err)
		}
		after := saveAll(t, ns)
		if strings.Contains(after, ChainPrefix) {
			t.Errorf("left after Remove:\n%s", after)
		}
		if got := userLines(after); !slices.Equal(got, userBefore) {
			t.Errorf("user rules changed:\n%s\nwere:\n%s", strings.Join(got, "\n"), strings.Join(userBefore, "\n"))
		}
		if len(removed) != 3+5+2 {
			t.Errorf("removed %d items: %q", len(removed), removed)
		}
		// Idempotent, and nothing to do writes nothing.
		removed = nil
		if err := Remove(opts, func(s string) { removed = append(removed, s) }); err != nil || len(removed) != 0 {
			t.Errorf("second Remove: %v %q", err, removed)
		}
	})
}

// TestNoTablesCreatedWhenDisabled: a spec without balancing and NAT must not
// create iptables tables (each one registers hooks in the kernel).
func TestNoTablesCreatedWhenDisabled(t *testing.T) {
	ns := testNS(t)
	m := New(Options{Wrap: []string{"ip", "netns", "exec", ns}})
	s := testSpec()
	s.Slots = 0
	s.WANs[1].NAT = false
	res, err := m.Apply(s)
	if err != nil || len(res.Changed) != 0 {
		t.Fatalf("apply: %+v %v", res, err)
	}
	if out := nsExec(t, ns, "", "nft", "list", "tables"); strings.TrimSpace(out) != "" {
		t.Errorf("tables created: %s", out)
	}
}

func TestMissingIptablesIsAnError(t *testing.T) {
	m := New(Options{Save: "/nonexistent/iptables-save", Restore: "/nonexistent/iptables-restore"})
	if _, err := m.Apply(testSpec()); err == nil || !strings.Contains(err.Error(), "iptables-save") {
		t.Errorf("err = %v", err)
	}
}

func TestMissingIptablesIsFineWhenNothingIsWanted(t *testing.T) {
	m := New(Options{Save: "/nonexistent/iptables-save", Restore: "/nonexistent/iptables-restore"})
	s := testSpec()
	s.Slots = 0
	s.WANs[1].NAT = false
	if res, err := m.Apply(s); err != nil || len(res.Changed) != 0 {
		t.Errorf("disabled firewall without iptables: %+v %v", res, err)
	}
}

// TestSetAppliesThroughRun: a reload hands the Spec over without waiting,
// and Run writes it at once rather than at its next period.
func TestSetAppliesThroughRun(t *testing.T) {
	ns := testNS(t)
	m := New(Options{Wrap: []string{"ip", "netns", "exec", ns}, Period: time.Hour})
	if _, err := m.Apply(testSpec()); err != nil {
		t.Fatal(err)
	}
	reports := make(chan Result, 4)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.Run(ctx, func(r Result, err error) {
			if err != nil {
				t.Errorf("run: %v", err)
			}
			reports <- r
		})
	}()
	defer func() { cancel(); <-done }()
	s := testSpec()
	s.WANs[1].NAT = false
	m.Set(s)
	select {
	case r := <-reports:
		if !slices.Equal(r.Changed, []string{"nat"}) {
			t.Errorf("after Set: %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Set not applied within 5s")
	}
	if strings.Contains(saveAll(t, ns), ChainNAT) {
		t.Error("nat chain still there")
	}
}

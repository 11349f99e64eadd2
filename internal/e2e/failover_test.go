package e2e

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wanreact/wanreact/internal/lab"
)

// Targets from the core issue: outage budgets a 200 packets/s flow may see.
const (
	carrierBudget   = 500 * time.Millisecond
	blackholeBudget = 1500 * time.Millisecond
)

// TestFailover covers the core promise for a LAN client and for traffic the
// router sends itself: carrier cut, silent blackhole, and return after
// recovery, with the spec's example probe settings (200ms, timeout 600ms).
func TestFailover(t *testing.T) {
	for _, from := range []string{lab.RoleClient, lab.RoleRouter} {
		t.Run(from, func(t *testing.T) {
			e := newEnv(t, labConfig{Timeout: "600ms"})
			e.start()
			e.waitActive("isp1", 10*time.Second)
			e.waitFor("isp2 up", 10*time.Second, func() (bool, string) {
				st, err := e.status()
				if err != nil {
					return false, err.Error()
				}
				return st["isp2"].State == "up", st["isp2"].State
			})

			gap, r, at := e.measureFailover(from, func() error { return e.lab.CarrierDown(1) }, 2*time.Second)
			t.Logf("carrier cut at %s: outage %v; after: %s", at.Format("15:04:05.000"), gap.Round(time.Millisecond), ispCounts(r, at.Add(gap+200*time.Millisecond), r.End))
			if gap > carrierBudget {
				t.Errorf("carrier cut outage %v > %v", gap, carrierBudget)
			}
			if c := r.ByISP(at.Add(time.Second), r.End); c[2] == 0 || c[1] != 0 {
				t.Errorf("after the carrier cut traffic should go via isp2 only: %s", ispCounts(r, at.Add(time.Second), r.End))
			}

			// Recovery: carrier back, probes prove isp1, traffic returns.
			if err := e.lab.CarrierUp(1); err != nil {
				t.Fatal(err)
			}
			e.waitActive("isp1", 10*time.Second)
			f, err := e.lab.StartFlow(from, 200)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			back := f.Stop()
			if back.LastISP() != 1 {
				t.Errorf("after recovery traffic goes via isp%d, want isp1", back.LastISP())
			}

			gap, r, at = e.measureFailover(from, func() error { return e.lab.Blackhole(1) }, 3*time.Second)
			t.Logf("blackhole: outage %v; after: %s", gap.Round(time.Millisecond), ispCounts(r, at.Add(gap+200*time.Millisecond), r.End))
			if gap > blackholeBudget {
				t.Errorf("blackhole outage %v > %v", gap, blackholeBudget)
			}
			if c := r.ByISP(at.Add(2*time.Second), r.End); c[2] == 0 || c[1] != 0 {
				t.Errorf("after the blackhole traffic should go via isp2 only: %s", ispCounts(r, at.Add(2*time.Second), r.End))
			}
			if err := e.lab.Restore(1); err != nil {
				t.Fatal(err)
			}
			e.waitActive("isp1", 10*time.Second)
			t.Logf("isp1 transitions: %s", strings.Join(e.transitions("isp1", time.Time{}), "; "))
		})
	}
}

// TestLossDoesNotFlap: 30% random loss on the preferred WAN for 40 s causes
// at most 2 state changes.
func TestLossDoesNotFlap(t *testing.T) {
	e := newEnv(t, labConfig{})
	e.start()
	e.waitActive("isp1", 10*time.Second)
	time.Sleep(2 * time.Second) // some history, as on a running router
	start := time.Now()
	if err := e.lab.Loss(1, 0.3); err != nil {
		t.Fatal(err)
	}
	time.Sleep(40 * time.Second)
	if err := e.lab.Restore(1); err != nil {
		t.Fatal(err)
	}
	tr := e.transitions("isp1", start)
	t.Logf("isp1 under 30%% loss for 40s: %d state changes: %s", len(tr), strings.Join(tr, "; "))
	if len(tr) > 2 {
		t.Errorf("%d state changes at 30%% loss, want at most 2", len(tr))
	}
	st, err := e.status()
	if err != nil {
		t.Fatal(err)
	}
	if st["isp1"].State == "up" && st["isp1"].Active {
		t.Errorf("isp1 at 30%% loss is up and active; expected degraded with isp2 carrying traffic: %+v", st)
	}
}

// TestKillAndRestart: kill -9 leaves routing working; a restart adopts what
// the previous run installed, without duplicates.
func TestKillAndRestart(t *testing.T) {
	e := newEnv(t, labConfig{})
	e.start()
	e.waitActive("isp1", 10*time.Second)
	rules, main, active := e.ourRules(), e.routes(11), e.routes(200)
	if len(rules) == 0 || len(main) == 0 || len(active) == 0 {
		t.Fatalf("nothing installed: rules=%v table11=%v table200=%v", rules, main, active)
	}
	f, err := e.lab.StartFlow(lab.RoleClient, 200)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	killedAt := time.Now()
	e.stop(syscall.SIGKILL)
	time.Sleep(time.Second)
	e.start()
	e.waitActive("isp1", 10*time.Second)
	time.Sleep(time.Second)
	r := f.Stop()
	if g := r.LongestGap(killedAt, r.End); g.Duration() > 200*time.Millisecond {
		t.Errorf("traffic stopped for %v across kill -9 and restart", g.Duration())
	}
	if got := e.ourRules(); !slices.Equal(got, rules) {
		t.Errorf("rules after restart:\n%s\nbefore:\n%s", strings.Join(got, "\n"), strings.Join(rules, "\n"))
	}
	if got := e.routes(11); !slices.Equal(got, main) {
		t.Errorf("table 11 after restart: %v, before %v", got, main)
	}
	if got := e.routes(200); !slices.Equal(got, active) {
		t.Errorf("active table after restart: %v, before %v", got, active)
	}
	// SIGTERM leaves routing in place too.
	e.stop(syscall.SIGTERM)
	if got := e.ourRules(); !slices.Equal(got, rules) {
		t.Errorf("SIGTERM removed rules: %v", got)
	}
	// cleanup removes everything of ours.
	if out, code := e.cli("cleanup", "-c", e.cfgPath); code != 0 {
		t.Fatalf("cleanup exit %d: %s", code, out)
	}
	if got := e.ourRules(); len(got) != 0 {
		t.Errorf("rules left after cleanup: %v", got)
	}
	if got := e.routes(200); len(got) != 0 {
		t.Errorf("active table left after cleanup: %v", got)
	}
}

// TestRepairsManualDeletion: rules deleted or tables flushed by hand come
// back within 2 s.
func TestRepairsManualDeletion(t *testing.T) {
	e := newEnv(t, labConfig{})
	e.start()
	e.waitActive("isp1", 10*time.Second)
	rules, t11, t200 := e.ourRules(), e.routes(11), e.routes(200)
	for _, c := range [][]string{
		{"ip", "rule", "del", "priority", "10200"},
		{"ip", "rule", "del", "priority", "10101"},
		{"ip", "route", "flush", "table", "11"},
		{"ip", "route", "flush", "table", "200"},
	} {
		if out, err := e.lab.Exec(lab.RoleRouter, c...); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	deleted := time.Now()
	e.waitFor("repair", 2*time.Second, func() (bool, string) {
		ok := slices.Equal(e.ourRules(), rules) && slices.Equal(e.routes(11), t11) && slices.Equal(e.routes(200), t200)
		return ok, fmt.Sprint(e.ourRules(), e.routes(11), e.routes(200))
	})
	t.Logf("repaired in %v", time.Since(deleted).Round(time.Millisecond))
}

// TestReloadRejectsBadConfig: SIGHUP with a broken file keeps the running
// config; a good one is taken.
func TestReloadRejectsBadConfig(t *testing.T) {
	e := newEnv(t, labConfig{})
	e.start()
	e.waitActive("isp1", 10*time.Second)
	good, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.cfgPath, append(good, []byte("bogus_key: 1\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = e.daemon.Process.Signal(syscall.SIGHUP)
	e.waitFor("reload rejection logged", 5*time.Second, func() (bool, string) {
		return strings.Contains(e.logBuf.String(), "reload rejected") && strings.Contains(e.logBuf.String(), "bogus_key"), ""
	})
	e.waitActive("isp1", time.Second)
	// A valid change: isp2 becomes preferred.
	swapped := strings.Replace(string(good), "priority: 2", "priority: 0", 1)
	if err := os.WriteFile(e.cfgPath, []byte(swapped), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = e.daemon.Process.Signal(syscall.SIGHUP)
	e.waitActive("isp2", 5*time.Second)
}

// TestCLI covers check and the unreachable-daemon exit code.
func TestCLI(t *testing.T) {
	needRoot(t)
	bin := wanreactBin(t)
	dir := t.TempDir()
	bad := dir + "/bad.yaml"
	os.WriteFile(bad, []byte("wans:\n  - name: a\n    interface: wan0\n    table: 10\n    addressing: static\n    address: 203.0.113.2/24\n    probe: {targets: [198.51.100.1], interval: 2 s}\n    colour: red\n"), 0o644)
	out, err := runCmd(bin, "check", "-c", bad)
	if code := exitCode(err); code != 1 {
		t.Fatalf("check of a bad file exited %d: %s", code, out)
	}
	for _, want := range []string{bad + ":5:17: WAN \"a\": addressing static needs gateway", bad + ":7:48: bad duration", bad + ":8:5: unknown key \"colour\""} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	out, err = runCmd(bin, "status", "--socket", dir+"/nothing.sock")
	if code := exitCode(err); code != 2 {
		t.Fatalf("status without daemon exited %d: %s", code, out)
	}
	out, err = runCmd(bin, "version")
	if err != nil || !strings.HasPrefix(out, "wanreact ") {
		t.Fatalf("version: %v %s", err, out)
	}
}

// TestCleanupWithoutConfig: uninstalling works even when the config is gone:
// everything wanreact installed is tagged as its own.
func TestCleanupWithoutConfig(t *testing.T) {
	e := newEnv(t, labConfig{})
	e.start()
	e.waitActive("isp1", 10*time.Second)
	e.stop(syscall.SIGTERM)
	if len(e.ourRules()) == 0 || len(e.routes(200)) == 0 {
		t.Fatal("nothing installed to clean up")
	}
	out, code := e.cli("cleanup", "-c", e.dir+"/missing.yaml")
	if code != 0 {
		t.Fatalf("cleanup exit %d: %s", code, out)
	}
	if !strings.Contains(out, "removing everything tagged") {
		t.Errorf("cleanup did not say it fell back: %s", out)
	}
	if got := e.ourRules(); len(got) != 0 {
		t.Errorf("rules left: %v", got)
	}
	for _, table := range []int{11, 12, 200} {
		if got := e.routes(table); len(got) != 0 {
			t.Errorf("table %d left: %v", table, got)
		}
	}
	fw, _ := e.lab.Exec(lab.RoleRouter, "iptables-save")
	if strings.Contains(string(fw), "WANREACT") {
		t.Errorf("firewall chains left:\n%s", fw)
	}
}

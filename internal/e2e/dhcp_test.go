package e2e

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wanreact/wanreact/internal/lab"
)

// startDnsmasq runs a real DHCP server in ISP i's namespace on its
// customer-facing link, handing out addresses of the shared 203.0.113.0/24
// with classless routes (option 121) that must end up in the WAN's table.
func (e *env) startDnsmasq(i int) {
	e.t.Helper()
	dir := e.t.TempDir()
	cmd := e.lab.Command(lab.ISPRole(i), "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
		"--interface="+lab.ISPCustIf, "--bind-interfaces", "--user=root", "--group=root",
		"--dhcp-leasefile="+filepath.Join(dir, "leases"), "--pid-file="+filepath.Join(dir, "pid"),
		"--no-ping", "--dhcp-authoritative", "--log-facility=-",
		"--dhcp-range=203.0.113.50,203.0.113.99,255.255.255.0,2m",
		"--dhcp-option=option:classless-static-route,192.0.2.0/24,203.0.113.1,0.0.0.0/0,203.0.113.1",
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("dnsmasq: %v", err)
	}
	e.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if e.t.Failed() {
			e.t.Logf("dnsmasq log:\n%s", out.String())
		}
	})
}

// TestDHCPWAN: a WAN with addressing: dhcp gets its address and classless
// routes from dnsmasq, fails over like any other, and keeps its address
// across a daemon restart (stored lease, no DHCP round trip needed).
func TestDHCPWAN(t *testing.T) {
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Fatal("dnsmasq missing: `make test` installs it (scripts/deps.sh)")
	}
	e := newEnv(t, labConfig{DHCP: []int{1}})
	e.startDnsmasq(1)
	started := time.Now()
	e.start()
	e.waitFor("isp1 address from DHCP", 5*time.Second, func() (bool, string) {
		out, _ := e.lab.Exec(lab.RoleRouter, "ip", "-4", "-o", "addr", "show", "dev", "wan0")
		return strings.Contains(string(out), "203.0.113."), string(out)
	})
	t.Logf("address after %v", time.Since(started).Round(time.Millisecond))
	if time.Since(started) > 2*time.Second {
		t.Errorf("DHCP address took %v", time.Since(started))
	}
	e.waitActive("isp1", 10*time.Second)
	routes := strings.Join(e.routes(11), "\n")
	if !strings.Contains(routes, "192.0.2.0/24 via 203.0.113.1 dev wan0") || !strings.Contains(routes, "default via 203.0.113.1 dev wan0") {
		t.Errorf("table 11 lacks the lease's classless routes:\n%s", routes)
	}
	addrBefore, _ := e.lab.Exec(lab.RoleRouter, "ip", "-4", "-o", "addr", "show", "dev", "wan0")

	gap, r, at := e.measureFailover(lab.RoleClient, func() error { return e.lab.CarrierDown(1) }, 2*time.Second)
	t.Logf("carrier cut on the DHCP WAN: outage %v; after: %s", gap.Round(time.Millisecond), ispCounts(r, at.Add(time.Second), r.End))
	if gap > carrierBudget {
		t.Errorf("outage %v > %v", gap, carrierBudget)
	}
	if err := e.lab.CarrierUp(1); err != nil {
		t.Fatal(err)
	}
	e.waitActive("isp1", 10*time.Second)

	// Restart with the stored lease: the address never goes away.
	e.stop(syscall.SIGKILL)
	e.start()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := e.lab.Exec(lab.RoleRouter, "ip", "-4", "-o", "addr", "show", "dev", "wan0")
		if string(out) != string(addrBefore) {
			t.Fatalf("address changed across restart:\nbefore %s\nafter  %s", addrBefore, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.waitActive("isp1", 10*time.Second)
	st, err := e.status()
	if err != nil {
		t.Fatal(err)
	}
	if st["isp1"].State != "up" {
		t.Errorf("isp1 after restart: %+v", st["isp1"])
	}
}

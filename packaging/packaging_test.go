// Package packaging_test checks the service files, the install layout, the
// Debian package and the release cross-builds. The directory holds no Go
// code of its own: only these tests, next to the files they check.
package packaging_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wanreact/wanreact/internal/testbin"
)

func TestMain(m *testing.M) { testbin.Main(m) }

func wanreactBin(t *testing.T) string { return testbin.Wanreact(t) }

// unitWithBinary writes a copy of the unit whose commands run bin, since
// systemd-analyze verify checks that the executables exist.
func unitWithBinary(t *testing.T, bin string) string {
	t.Helper()
	b, err := os.ReadFile("systemd/wanreact.service")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "wanreact.service")
	if err := os.WriteFile(p, bytes.ReplaceAll(b, []byte("/usr/sbin/wanreact"), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func unitProps(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open("systemd/wanreact.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	props := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			props[k] = append(props[k], v)
		}
	}
	return props
}

// TestSystemdUnit: the unit passes systemd-analyze verify and has the
// properties the contract requires (notify with watchdog, two capabilities,
// hardening), and its exposure score stays low.
func TestSystemdUnit(t *testing.T) {
	props := unitProps(t)
	for k, want := range map[string]string{
		"Type": "notify", "NotifyAccess": "main", "WatchdogSec": "10s", "Restart": "always",
		"CapabilityBoundingSet": "CAP_NET_ADMIN CAP_NET_RAW", "NoNewPrivileges": "yes",
		"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "RuntimeDirectory": "wanreact",
		"StateDirectory": "wanreact", "RestrictAddressFamilies": "AF_UNIX AF_NETLINK AF_INET AF_INET6 AF_PACKET",
	} {
		if got := props[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	if v := props["ProtectKernelTunables"]; len(v) != 1 || v[0] != "no" {
		// The daemon writes net sysctls; "yes" would break it at run
		// time, silently for the verifier.
		t.Errorf("ProtectKernelTunables=%q, want an explicit no", v)
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: unit not verified (apt-get install systemd)")
	}
	unit := unitWithBinary(t, wanreactBin(t))
	out, err := exec.Command(sa, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(sa, "security", "--offline=true", "--no-pager", unit).CombinedOutput()
	if err != nil {
		t.Logf("systemd-analyze security unavailable: %v", err)
		return
	}
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure score in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze verify: clean; security exposure %.1f (0 best, 10 worst)", score)
	if score > 4 {
		t.Errorf("exposure %.1f: the hardening regressed", score)
	}
}

// TestShellScripts: every shell script parses with dash (Debian's /bin/sh,
// close to busybox ash) and uses no bashisms checkbashisms knows of.
func TestShellScripts(t *testing.T) {
	scripts := []string{"sysv/wanreact", "openrc/wanreact", "install.sh", "mkdeb.sh",
		"debian/postinst", "debian/prerm", "debian/postrm", "../scripts/release.sh"}
	for _, s := range scripts {
		st, err := os.Stat(s)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s is not executable", s)
		}
		for _, sh := range []string{"dash", "sh"} {
			if p, err := exec.LookPath(sh); err == nil {
				if out, err := exec.Command(p, "-n", s).CombinedOutput(); err != nil {
					t.Errorf("%s -n %s: %v\n%s", sh, s, err, out)
				}
				break
			}
		}
	}
	if p, err := exec.LookPath("checkbashisms"); err == nil {
		if out, err := exec.Command(p, append([]string{"--force"}, scripts...)...).CombinedOutput(); err != nil {
			t.Errorf("checkbashisms: %v\n%s", err, out)
		}
	} else {
		t.Log("checkbashisms not installed; dash -n only")
	}
}

func randSuffix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// TestSysvScript runs the init script for real, in a network namespace of
// its own: start waits for the control socket, status reports the WANs,
// reload is refused for a broken file and taken for a good one, stop ends
// the daemon.
func TestSysvScript(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root and network namespaces")
	}
	bin := wanreactBin(t)
	ns := "wrpk-" + randSuffix() + "-svc"
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() {
		// Whatever the script left running in the namespace goes with
		// it, also when the test failed half-way.
		if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		exec.Command("ip", "netns", "del", ns).Run()
	})
	exec.Command("ip", "-n", ns, "link", "set", "lo", "up").Run()

	dir := t.TempDir()
	cfg := filepath.Join(dir, "wanreact.yaml")
	good := fmt.Sprintf(`control_socket: %s/run/wanreact.sock
event_log: %s/events.jsonl
state_dir: %s/state
hooks: {dir: ""}
wans:
  - name: isp1
    interface: wan0
    table: 10
    addressing: static
    address: 192.0.2.2/24
    gateway: 192.0.2.1
    probe: {targets: [198.51.100.1]}
`, dir, dir, dir)
	os.WriteFile(cfg, []byte(good), 0o644)
	env := append(os.Environ(), "DAEMON="+bin, "CONFIG="+cfg, "PIDFILE="+dir+"/wanreact.pid",
		"LOGFILE="+dir+"/wanreact.log", "RUNDIR="+dir+"/run", "STATEDIR="+dir+"/state", "STOP_WAIT=10")
	script, _ := filepath.Abs("sysv/wanreact")
	run := func(arg string) (string, int) {
		cmd := exec.Command("ip", "netns", "exec", ns, "sh", script, arg)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(dir + "/wanreact.pid"); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				if p, err := os.FindProcess(pid); err == nil {
					p.Kill()
				}
			}
		}
		if t.Failed() {
			b, _ := os.ReadFile(dir + "/wanreact.log")
			t.Logf("daemon log:\n%s", b)
		}
	})

	if out, code := run("status"); code != 3 {
		t.Fatalf("status before start: %d %s", code, out)
	}
	start := time.Now()
	if out, code := run("start"); code != 0 || !strings.Contains(out, "wanreact started") {
		t.Fatalf("start: %d %s", code, out)
	}
	t.Logf("started and answering in %v", time.Since(start).Round(time.Millisecond))
	pidB, _ := os.ReadFile(dir + "/wanreact.pid")
	pid := strings.TrimSpace(string(pidB))
	if exe, _ := os.Readlink("/proc/" + pid + "/exe"); exe != bin {
		t.Errorf("pid file names %s (%s), not the daemon", pid, exe)
	}
	if out, code := run("status"); code != 0 || !strings.Contains(out, "isp1") {
		t.Errorf("status: %d %s", code, out)
	}
	if out, code := run("start"); code != 0 || !strings.Contains(out, "already running") {
		t.Errorf("second start: %d %s", code, out)
	}
	os.WriteFile(cfg, []byte(good+"bogus: 1\n"), 0o644)
	if out, code := run("reload"); code != 6 || !strings.Contains(out, `unknown key "bogus"`) {
		t.Errorf("reload of a broken file: %d %s", code, out)
	}
	os.WriteFile(cfg, []byte(good), 0o644)
	if out, code := run("reload"); code != 0 {
		t.Errorf("reload: %d %s", code, out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(dir + "/wanreact.log")
		if strings.Contains(string(b), "config reloaded") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reload in the daemon log:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, code := run("stop"); code != 0 || !strings.Contains(out, "stopped") {
		t.Fatalf("stop: %d %s", code, out)
	}
	if stat, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil && !isZombie(stat) {
		// (A zombie has exited; reaping it is init's job, which some
		// container inits do late.)
		t.Errorf("daemon %s still running after stop", pid)
	}
	if out, code := run("status"); code != 3 {
		t.Errorf("status after stop: %d %s", code, out)
	}
	os.WriteFile(cfg, []byte("wans: []\n"), 0o644)
	if out, code := run("start"); code != 6 {
		t.Errorf("start with a broken config: %d %s", code, out)
	}
}

// isZombie reads the state field of /proc/PID/stat ("pid (comm) S ...").
func isZombie(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// TestInstallAndDebianPackage: install.sh lays out the files with the
// right modes, keeps an administrator's files, and mkdeb.sh packages the
// same layout.
func TestInstallAndDebianPackage(t *testing.T) {
	bin := wanreactBin(t)
	dest := t.TempDir()
	os.MkdirAll(dest+"/etc/default", 0o755)
	os.WriteFile(dest+"/etc/default/wanreact", []byte("# mine\n"), 0o644)
	if out, err := exec.Command("./install.sh", bin, dest).CombinedOutput(); err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	for p, mode := range map[string]os.FileMode{
		"usr/sbin/wanreact": 0o755, "lib/systemd/system/wanreact.service": 0o644, "etc/init.d/wanreact": 0o755,
		"etc/wanreact/hooks.d": 0o755 | os.ModeDir, "usr/share/doc/wanreact/wanreact.yaml.example": 0o644,
		"usr/share/doc/wanreact/operations.md": 0o644, "usr/share/doc/wanreact/configuration.md": 0o644,
		"usr/share/doc/wanreact/security.md": 0o644, "usr/share/doc/wanreact/migration.md": 0o644,
	} {
		st, err := os.Stat(filepath.Join(dest, p))
		if err != nil {
			t.Errorf("missing %s", p)
			continue
		}
		if got := st.Mode() & (os.ModeDir | os.ModePerm); got != mode {
			t.Errorf("%s mode %v, want %v", p, got, mode)
		}
	}
	if b, _ := os.ReadFile(dest + "/etc/default/wanreact"); string(b) != "# mine\n" {
		t.Error("install.sh overwrote /etc/default/wanreact")
	}
	// The shipped example is a valid configuration.
	if out, err := exec.Command(bin, "check", "-c", dest+"/usr/share/doc/wanreact/wanreact.yaml.example").CombinedOutput(); err != nil {
		t.Errorf("example config: %v\n%s", err, out)
	}

	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed: Debian package not built")
	}
	out, err := exec.Command("./mkdeb.sh", bin, "v1.2-3-gabc-dirty", "amd64", t.TempDir()).CombinedOutput()
	if err != nil {
		t.Fatalf("mkdeb.sh: %v\n%s", err, out)
	}
	deb := strings.TrimSpace(string(out))
	if filepath.Base(deb) != "wanreact_1.2+3+gabc+dirty_amd64.deb" {
		t.Errorf("package name %s", deb)
	}
	info, _ := exec.Command("dpkg-deb", "-f", deb, "Package", "Version", "Architecture").Output()
	if want := "Package: wanreact\nVersion: 1.2+3+gabc+dirty\nArchitecture: amd64\n"; string(info) != want {
		t.Errorf("control fields:\n%s", info)
	}
	list, _ := exec.Command("dpkg-deb", "-c", deb).Output()
	for _, want := range []string{"-rwxr-xr-x root/root", "./usr/sbin/wanreact", "./lib/systemd/system/wanreact.service", "./etc/wanreact/hooks.d/"} {
		if !bytes.Contains(list, []byte(want)) {
			t.Errorf("package lacks %q:\n%s", want, list)
		}
	}
	conff, _ := exec.Command("dpkg-deb", "-I", deb, "conffiles").Output()
	if !bytes.Contains(conff, []byte("/etc/default/wanreact")) {
		t.Errorf("conffiles: %s", conff)
	}
}

// TestReleaseBuild runs scripts/release.sh for two targets (all five take a
// few minutes; `make release` builds them) and checks every output: static
// ELF for the right machine, built with the right GOARM, version stamped,
// checksums matching.
func TestReleaseBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-builds skipped in -short mode")
	}
	dist := t.TempDir()
	cmd := exec.Command("../scripts/release.sh", "v9.8.7-test")
	cmd.Env = append(os.Environ(), "DIST="+dist, "TARGETS=amd64 armv5")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("release.sh: %v\n%s", err, out)
	}
	t.Logf("release.sh in %v:\n%s", time.Since(start).Round(time.Second), out)
	for _, c := range []struct {
		target  string
		machine elf.Machine
		setting string
	}{{"amd64", elf.EM_X86_64, "GOARCH=amd64"}, {"armv5", elf.EM_ARM, "GOARM=5"}} {
		p := filepath.Join(dist, "wanreact-v9.8.7-test-linux-"+c.target)
		f, err := elf.Open(p)
		if err != nil {
			t.Errorf("%s: %v", c.target, err)
			continue
		}
		if f.Machine != c.machine || f.Class == elf.ELFCLASSNONE {
			t.Errorf("%s: machine %v", c.target, f.Machine)
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
				t.Errorf("%s is dynamically linked (%v)", c.target, prog.Type)
			}
		}
		if s := f.Section(".symtab"); s != nil {
			t.Errorf("%s is not stripped", c.target)
		}
		f.Close()
		bi, err := buildinfo.ReadFile(p)
		if err != nil {
			t.Errorf("%s: build info: %v", c.target, err)
			continue
		}
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		k, v, _ := strings.Cut(c.setting, "=")
		// (-ldflags is not recorded with -trimpath; the version is
		// checked by running the amd64 binary below.)
		if settings[k] != v || settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
			t.Errorf("%s build settings: %v", c.target, settings)
		}
	}
	sum := exec.Command("sha256sum", "-c", "SHA256SUMS")
	sum.Dir = dist
	if out, err := sum.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c: %v\n%s", err, out)
	} else if n := strings.Count(string(out), ": OK"); n < 2 {
		t.Errorf("SHA256SUMS checks only %d files:\n%s", n, out)
	}
	// The version flag made it into the binary.
	if out, err := exec.Command(filepath.Join(dist, "wanreact-v9.8.7-test-linux-amd64"), "version").Output(); err != nil || string(out) != "wanreact v9.8.7-test\n" {
		t.Errorf("version: %q %v", out, err)
	}
}

// Package wifivm runs a test script inside a small qemu VM that has a real
// Linux Wi-Fi stack (mac80211_hwsim, hostapd, wpa_supplicant), for
// end-to-end tests on machines whose own kernel has no cfg80211.
//
// The VM recipe is wifivm.sh next to this file (embedded, so tests need
// nothing outside the repository). In the guest, an access point (hostapd on
// wlan0, SSID "wanreact-test", channel 1, 192.0.2.1/24) runs in its own
// network namespace and a station (wpa_supplicant on wlan1, 192.0.2.2/24) is
// associated to it before the guest script starts. The script runs as root
// under busybox sh and can use the helpers ap-stop, ap-start and
// ap-txpower MBM. A boot costs about 25 s on two cores (software emulation).
//
// Missing host packages (qemu-system-x86, linux-image-amd64, busybox-static,
// hostapd, wpasupplicant, iw) are installed with apt-get on first use.
package wifivm

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

//go:embed wifivm.sh
var script []byte

// SkipEnv set to 1 makes Run skip the calling test (for machines that cannot
// run qemu or reach a Debian mirror).
const SkipEnv = "WANREACT_SKIP_WIFIVM"

// DefaultTimeout bounds one VM run (boot, guest script, power-off).
const DefaultTimeout = 120 * time.Second

// ExitMarker precedes the guest script's exit status on the console.
const ExitMarker = "WIFIVM-EXIT: "

// Run boots the VM, runs guestScript (busybox sh source) in it and returns
// the console output. files are copied to /x/ in the guest under their base
// names (build Go programs with CGO_ENABLED=0: the guest only has the
// shared libraries hostapd, wpa_supplicant and iw need). err is non-nil when the guest script
// exits non-zero, or the VM could not be built or run; the console is
// returned in every case, for diagnosis. The environment variable
// WIFIVM_TIMEOUT (seconds) overrides DefaultTimeout.
func Run(t testing.TB, guestScript string, files ...string) (console string, err error) {
	t.Helper()
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("%s=1: skipping the Wi-Fi VM test", SkipEnv)
	}
	dir := t.TempDir()
	sh := filepath.Join(dir, "wifivm.sh")
	guest := filepath.Join(dir, "guest.sh")
	if err := os.WriteFile(sh, script, 0o755); err != nil {
		return "", fmt.Errorf("wifivm: writing VM script: %w", err)
	}
	if err := os.WriteFile(guest, []byte(guestScript), 0o755); err != nil {
		return "", fmt.Errorf("wifivm: writing guest script: %w", err)
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			return "", fmt.Errorf("wifivm: guest file: %w", err)
		}
	}
	timeout := DefaultTimeout
	if v := os.Getenv("WIFIVM_TIMEOUT"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return "", fmt.Errorf("wifivm: WIFIVM_TIMEOUT=%q is not a positive number of seconds", v)
		}
		timeout = time.Duration(n) * time.Second
	}

	cmd := exec.Command("bash", append([]string{sh, guest}, files...)...)
	// Own process group, so that a kill reaches qemu too, not only bash.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = append(os.Environ(), "WIFIVM_TIMEOUT="+strconv.Itoa(int(timeout/time.Second)))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// The script bounds qemu with timeout(1); the extra margin here covers
	// a first-time package installation and a hung script.
	cmd.WaitDelay = 5 * time.Second
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("wifivm: starting VM script: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(timeout + 10*time.Minute):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = <-done
		if err == nil {
			err = errors.New("killed")
		}
		err = fmt.Errorf("wifivm: VM script did not finish: %w", err)
		return out.String(), err
	}
	t.Logf("wifivm: VM run took %s", time.Since(started).Round(100*time.Millisecond))
	console = out.String()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return console, fmt.Errorf("wifivm: guest script failed (exit status %d)", ee.ExitCode())
	}
	if err != nil {
		return console, fmt.Errorf("wifivm: running VM script: %w", err)
	}
	return console, nil
}

package wifivm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRun boots the VM once and checks the contract the Wi-Fi tests rely
// on: the station is associated before the script starts, extra files reach
// /x/, the console is returned, and the script's exit status is reported.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the Wi-Fi VM test (boots a VM, ~25 s)")
	}
	f := filepath.Join(t.TempDir(), "payload.txt")
	if err := os.WriteFile(f, []byte("payload-7f3a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	guest := `
echo "PAYLOAD: $(cat /x/payload.txt)"
iw dev wlan1 link | grep -q 'SSID: wanreact-test' && echo "LINK: ok"
ping -c 1 -W 2 192.0.2.1 >/dev/null && echo "PING: ok"
exit 3
`
	console, err := Run(t, guest, f)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("err = %v, want the guest's exit status 3", err)
	}
	for _, want := range []string{"WIFIVM: associated", "PAYLOAD: payload-7f3a", "LINK: ok", "PING: ok", ExitMarker + "3"} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("console:\n%s", console)
	}
}

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wanreact/wanreact/internal/wifivm"
)

// wifiGuest runs the real daemon on the VM's station interface with a probe
// interval so slow (2 s, 3 losses to go down) that only nl80211 events can
// make it react within a second, then lowers the AP's power, stops and
// restarts the AP. MARK lines carry the wall clock (ns) of each step.
const wifiGuest = `
cd /x
cat > /tmp/w.yaml <<'YAML'
control_socket: /tmp/w.sock
event_log: /tmp/events.jsonl
state_dir: /tmp/state
wans:
  - name: wifi1
    interface: wlan1
    table: 11
    addressing: external
    gateway: 192.0.2.1
    probe:
      targets: [192.0.2.1]
      interval: 2s
      timeout: 1s
      up_after: 2
    wifi:
      min_signal: -40
      hysteresis: 2
YAML
./wanreact run -c /tmp/w.yaml > /tmp/daemon.log 2>&1 &
DAEMON=$!
wait_state() {
  i=0
  while [ $i -lt $2 ]; do
    ./wanreact status --json --socket /tmp/w.sock 2>/dev/null | grep -q "\"state\":\"$1\"" && return 0
    sleep 0.2; i=$((i+1))
  done
  echo "TIMEOUT waiting for $1"; return 1
}
wait_state up 100
echo "MARK txpower $(./nowns)"
ap-txpower 100
wait_state degraded 50
ap-txpower 2000
sleep 1
echo "MARK apstop $(./nowns)"
ap-stop
wait_state down 25
echo "MARK apstart $(./nowns)"
ap-start
wait_state up 100
./wanreact status --socket /tmp/w.sock
kill $DAEMON; sleep 0.5
grep '"decision"' /tmp/events.jsonl | sed 's/^/EVENT /'
grep '"source":"wifi"' /tmp/events.jsonl | sed 's/^/WIFI /'
sed 's/^/DAEMON /' /tmp/daemon.log | head -60
`

// TestWifiVM runs the daemon against a real Wi-Fi stack (mac80211_hwsim,
// hostapd, wpa_supplicant in a qemu VM): AP stopped -> the WAN is down within
// 1 s; AP back -> up after association and probes; AP power lowered below
// min_signal -> degraded within a few seconds.
func TestWifiVM(t *testing.T) {
	if testing.Short() {
		t.Skip("Wi-Fi VM test skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (apt-get of qemu and friends)")
	}
	bin := wanreactBin(t)
	nowns := filepath.Join(t.TempDir(), "nowns")
	build := exec.Command("go", "build", "-o", nowns, "./testdata/nowns")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build nowns: %v\n%s", err, out)
	}
	console, err := wifivm.Run(t, wifiGuest, bin, nowns)
	if err != nil {
		t.Fatalf("VM: %v\n%s", err, console)
	}
	marks := map[string]time.Time{}
	type transition struct {
		at       time.Time
		from, to string
		reason   string
	}
	var trs []transition
	for _, line := range strings.Split(console, "\n") {
		line = strings.TrimSpace(line)
		if f := strings.Fields(line); len(f) == 3 && f[0] == "MARK" {
			ns, _ := strconv.ParseInt(f[2], 10, 64)
			marks[f[1]] = time.Unix(0, ns)
		}
		if rest, ok := strings.CutPrefix(line, "EVENT "); ok {
			var r struct {
				Time        time.Time
				Transitions []struct{ WAN, From, To, Reason string }
			}
			if json.Unmarshal([]byte(rest), &r) == nil {
				for _, tr := range r.Transitions {
					trs = append(trs, transition{r.Time, tr.From, tr.To, tr.Reason})
				}
			}
		}
		if strings.HasPrefix(line, "TIMEOUT") {
			t.Errorf("guest: %s", line)
		}
	}
	for _, tr := range trs {
		t.Logf("%s %s->%s (%s)", tr.at.Format("15:04:05.000"), tr.from, tr.to, tr.reason)
	}
	first := func(after time.Time, to string) (time.Duration, bool) {
		for _, tr := range trs {
			if !tr.at.Before(after) && tr.to == to {
				return tr.at.Sub(after), true
			}
		}
		return 0, false
	}
	for _, m := range []string{"txpower", "apstop", "apstart"} {
		if marks[m].IsZero() {
			t.Fatalf("guest did not reach %s:\n%s", m, console)
		}
	}
	if d, ok := first(marks["txpower"], "degraded"); !ok || d > 5*time.Second {
		t.Errorf("AP power lowered: degraded after %v (found %v), want within 5 s", d, ok)
	} else {
		t.Logf("degraded %v after the AP's power drop", d.Round(time.Millisecond))
	}
	if d, ok := first(marks["apstop"], "down"); !ok || d > time.Second {
		t.Errorf("AP stopped: down after %v (found %v), want within 1 s", d, ok)
	} else {
		t.Logf("down %v after ap-stop", d.Round(time.Millisecond))
	}
	if d, ok := first(marks["apstart"], "up"); !ok {
		t.Errorf("AP back: never up again")
	} else {
		t.Logf("up %v after ap-start (association + 2 probes at 2 s)", d.Round(time.Millisecond))
	}
	if t.Failed() {
		t.Logf("console:\n%s", console)
	}
}

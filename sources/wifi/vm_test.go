package wifi_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/wanreact/wanreact/internal/wifivm"
	"github.com/wanreact/wanreact/reactor"
	"github.com/wanreact/wanreact/sources/wifi"
)

// vmGuest runs wifiwatch (the Source on its own) on the VM's station wlan1
// with min_signal -40, plus the loopback interface as a "wired" WAN, and
// drives the AP: power down, stop, start. Markers carry /proc/uptime, the
// clock wifiwatch stamps its lines with.
const vmGuest = `
/x/wifiwatch -iface wifi1:wlan1:-40:4 -iface wired:lo:-70:4 -poll 1s >/tmp/ev.jsonl 2>/tmp/ww.log &
WW=$!
mark() { echo "MARK $1 $(cut -d' ' -f1 /proc/uptime)"; }
# wait_for PATTERN TENTHS [COUNT]: until PATTERN occurs COUNT times (default 1) in the output
wait_for() {
  i=0
  until [ "$(grep -c "$1" /tmp/ev.jsonl)" -ge "${3:-1}" ]; do
    i=$((i+1)); [ $i -gt $2 ] && { echo "GUEST: timed out waiting for $1"; return 1; }; sleep 0.1
  done
}
wait_for '"kind":"connected"' 100
# CQM reports the first classification after a few beacons.
wait_for '"detail":"high"' 50
mark txpower; ap-txpower 100
wait_for '"detail":"low"' 80
sleep 0.5
mark stop; ap-stop
wait_for '"kind":"disconnected"' 30
sleep 1
mark start; ap-start
wait_for '"kind":"connected"' 150 2
sleep 2
kill -TERM $WW; wait $WW; echo "WATCH-EXIT: $?"
sed 's/^/EV /' /tmp/ev.jsonl
sed 's/^/LOG /' /tmp/ww.log
`

type vmLine struct {
	Uptime float64        `json:"uptime"`
	Event  *reactor.Event `json:"event"`
	Status *wifi.Status   `json:"status"`
}

// TestVMEndToEnd runs the source against the real Linux Wi-Fi stack
// (mac80211_hwsim, hostapd, wpa_supplicant) in a qemu VM: one boot.
func TestVMEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the Wi-Fi VM test (boots a VM, ~25 s)")
	}
	bin := filepath.Join(t.TempDir(), "wifiwatch")
	build := exec.Command(goTool(), "build", "-o", bin, "./internal/wifiwatch")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building wifiwatch: %v\n%s", err, out)
	}
	console, err := wifivm.Run(t, vmGuest, bin)
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, console)
	}
	defer func() {
		if t.Failed() {
			t.Logf("console:\n%s", console)
		}
	}()

	marks := map[string]float64{}
	var events []vmLine
	statuses := map[string]wifi.Status{}
	var logs []string
	for _, line := range strings.Split(console, "\n") {
		switch {
		case strings.HasPrefix(line, "MARK "):
			f := strings.Fields(line)
			if len(f) == 3 {
				v, err := strconv.ParseFloat(f[2], 64)
				if err != nil {
					t.Fatalf("bad marker %q", line)
				}
				marks[f[1]] = v
			}
		case strings.HasPrefix(line, "EV "):
			var l vmLine
			if err := json.Unmarshal([]byte(line[3:]), &l); err != nil {
				t.Fatalf("bad output line %q: %v", line, err)
			}
			switch {
			case l.Event != nil:
				events = append(events, l)
			case l.Status != nil:
				statuses[l.Status.WAN] = *l.Status
			}
		case strings.HasPrefix(line, "LOG "):
			logs = append(logs, line[4:])
		case strings.HasPrefix(line, "GUEST: "), strings.HasPrefix(line, "WIFIVM: NOT"):
			t.Error(line)
		}
	}
	if !strings.Contains(console, "WATCH-EXIT: 0") {
		t.Error("wifiwatch did not exit cleanly")
	}
	for _, m := range []string{"txpower", "stop", "start"} {
		if _, ok := marks[m]; !ok {
			t.Fatalf("guest marker %q missing", m)
		}
	}

	wc := func(l vmLine) reactor.WifiChange { w, _ := l.Event.Data.(reactor.WifiChange); return w }
	// find returns the first wifi1 event of kind (and detail, if given)
	// stamped after from.
	find := func(kind, detail string, from float64) (vmLine, bool) {
		for _, l := range events {
			w := wc(l)
			if l.Event.WAN == "wifi1" && w.Kind == kind && (detail == "" || w.Detail == detail) && l.Uptime > from {
				return l, true
			}
		}
		return vmLine{}, false
	}
	for _, l := range events {
		if l.Event.WAN != "wifi1" {
			t.Errorf("event for a WAN other than wifi1: %+v", l.Event)
		}
		t.Logf("%8.3f %-13s %+v", l.Uptime, wc(l).Kind, wc(l))
	}

	checkLink := func(what string, w reactor.WifiChange) {
		t.Helper()
		if w.Name != "wlan1" || w.Index == 0 || w.SSID != "wanreact-test" || w.BSSID != "02:00:00:00:00:00" || w.Frequency != 2412 {
			t.Errorf("%s: link details %+v", what, w)
		}
	}
	if len(events) == 0 {
		t.Fatal("no events")
	}
	first := wc(events[0])
	if first.Kind != "connected" || first.Detail != "initial" || first.Signal > -20 || first.Signal < -40 || first.Bitrate <= 0 {
		t.Errorf("first event %+v, want the initial connected state at about -30 dBm", first)
	}
	checkLink("initial", first)

	if l, ok := find("signal", "high", 0); !ok || l.Uptime > marks["txpower"] {
		t.Error("no CQM 'high' classification before the power drop")
	}
	if l, ok := find("signal", "low", marks["txpower"]); !ok {
		t.Error("no 'low' signal event after the AP power drop")
	} else {
		d := l.Uptime - marks["txpower"]
		t.Logf("signal low %.2fs after ap-txpower 100 (%d dBm)", d, wc(l).Signal)
		if d > 5 || wc(l).Signal >= -40 {
			t.Errorf("low signal event %+v after %.2fs, want below -40 dBm within 5s", wc(l), d)
		}
	}
	if l, ok := find("disconnected", "", marks["stop"]); !ok {
		t.Error("no 'disconnected' event after ap-stop")
	} else {
		d := l.Uptime - marks["stop"]
		w := wc(l)
		t.Logf("disconnected %.3fs after ap-stop (%s, reason %d)", d, w.Detail, w.Reason)
		if d > 1 {
			t.Errorf("disconnected %.3fs after ap-stop, want within 1s", d)
		}
		if w.Reason != 3 || !strings.HasSuffix(w.Detail, "_by_ap") {
			t.Errorf("disconnected %+v, want reason 3 (leaving) by the AP", w)
		}
		checkLink("disconnected", w)
	}
	n := 0
	for _, l := range events {
		if wc(l).Kind == "disconnected" && l.Uptime > marks["stop"] && l.Uptime < marks["start"] {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d disconnected events for one AP stop, want 1 (deauth and disconnect are one loss)", n)
	}
	if l, ok := find("connected", "", marks["start"]); !ok {
		t.Error("no 'connected' event after ap-start")
	} else {
		t.Logf("connected %.2fs after ap-start", l.Uptime-marks["start"])
		checkLink("reconnected", wc(l))
		if wc(l).Signal >= -40 || wc(l).Bitrate <= 0 {
			t.Errorf("reconnected %+v, want the lowered signal and a bitrate", wc(l))
		}
	}

	st, ok := statuses["wifi1"]
	if !ok || !st.Wireless || !st.Connected || !st.CQM || st.Polling || st.SSID != "wanreact-test" || st.BSSID != "02:00:00:00:00:00" ||
		st.Frequency != 2412 || st.Signal >= -40 || st.Signal < -70 || st.Bitrate <= 0 || !st.SignalLow {
		t.Errorf("final wifi1 status %+v (%v)", st, ok)
	}
	if st, ok := statuses["wired"]; !ok || st.Wireless || st.Connected {
		t.Errorf("final wired status %+v (%v)", st, ok)
	}
	notWifi := 0
	for _, l := range logs {
		t.Logf("wifiwatch: %s", l)
		if strings.Contains(l, "not an nl80211 interface") && strings.Contains(l, "interface=lo") {
			notWifi++
		}
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			t.Errorf("wifiwatch logged: %s", l)
		}
	}
	if notWifi != 1 {
		t.Errorf("the wired interface was reported %d times, want once; log:\n%s", notWifi, strings.Join(logs, "\n"))
	}
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

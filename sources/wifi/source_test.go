package wifi

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/wifi"
	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

var (
	ownMAC = mustMAC("02:00:00:00:01:00")
	ap1    = mustMAC("02:00:00:00:00:00")
	ap2    = mustMAC("02:00:00:00:0a:00")
)

const wlanIndex = 3

func wlan0() *wifi.Interface {
	return &wifi.Interface{Index: wlanIndex, Name: "wlan0", HardwareAddr: ownMAC, Type: wifi.InterfaceTypeStation}
}

func connectMsg(ifindex int, bssid net.HardwareAddr, status uint16) genetlink.Message {
	return msg(unix.NL80211_CMD_CONNECT, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NL80211_ATTR_IFINDEX, uint32(ifindex))
		ae.Bytes(unix.NL80211_ATTR_MAC, bssid)
		ae.Uint16(unix.NL80211_ATTR_STATUS_CODE, status)
	})
}

func disconnectMsg(ifindex int, reason uint16, byAP bool) genetlink.Message {
	return msg(unix.NL80211_CMD_DISCONNECT, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NL80211_ATTR_IFINDEX, uint32(ifindex))
		ae.Uint16(unix.NL80211_ATTR_REASON_CODE, reason)
		ae.Flag(unix.NL80211_ATTR_DISCONNECTED_BY_AP, byAP)
	})
}

func deauthMsg(ifindex int, frame []byte) genetlink.Message {
	return msg(unix.NL80211_CMD_DEAUTHENTICATE, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NL80211_ATTR_IFINDEX, uint32(ifindex))
		ae.Bytes(unix.NL80211_ATTR_FRAME, frame)
	})
}

func rssiMsg(ifindex int, event uint32, level int32) genetlink.Message {
	return cqmMsg(ifindex, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NL80211_ATTR_CQM_RSSI_THRESHOLD_EVENT, event)
		if level != 0 {
			ae.Int32(unix.NL80211_ATTR_CQM_RSSI_LEVEL, level)
		}
	})
}

// TestLifecycle walks one Wi-Fi WAN (and one wired WAN next to it) through
// initial state, CQM crossings, a deauth by the AP, reconnection, roaming
// and packet loss, checking events, SET_CQM requests and status.
func TestLifecycle(t *testing.T) {
	f := newFakeKernel(t)
	f.ifaces = []*wifi.Interface{wlan0()}
	f.associate(wlanIndex, "home", ap1, 2412, -55)
	h := startHarness(t, f, []Interface{
		{WAN: "wifi1", Name: "wlan0", MinSignal: -70, Hysteresis: 4},
		{WAN: "wired", Name: "eth0", MinSignal: -70, Hysteresis: 4},
	})

	// The state at start is reported with everything known about the link.
	e := h.next()
	w, _ := e.Data.(reactor.WifiChange)
	want := reactor.WifiChange{Index: wlanIndex, Name: "wlan0", Kind: "connected", SSID: "home", BSSID: ap1.String(),
		Frequency: 2412, Signal: -55, Bitrate: 54000, Detail: "initial"}
	if e.WAN != "wifi1" || w != want {
		t.Fatalf("first event = %q %+v, want wifi1 %+v", e.WAN, e.Data, want)
	}
	st := h.waitStatus("wifi1", func(s Status, ok bool) bool { return ok && s.CQM })
	if !st.Connected || !st.Wireless || st.SSID != "home" || st.Signal != -55 || st.Bitrate != 54000 || st.Polling {
		t.Errorf("status after start = %+v", st)
	}
	calls := f.calls()
	if len(calls) != 1 || calls[0] != (cqmCall{ifindex: wlanIndex, thold: -70, hyst: 4, flags: netlink.Request | netlink.Acknowledge}) {
		t.Fatalf("SET_CQM calls = %+v, want one for ifindex 3, -70 dBm, 4 dB, request+ack", calls)
	}

	// CQM crossings; the event's own level wins over the station's signal,
	// which stands in when the kernel sends no level.
	h.f.send(rssiMsg(wlanIndex, unix.NL80211_CQM_RSSI_THRESHOLD_EVENT_LOW, -74))
	if w := h.nextWifi("signal"); w.Signal != -74 || w.Detail != "low" || w.BSSID != ap1.String() {
		t.Errorf("CQM low = %+v", w)
	}
	h.waitStatus("wifi1", func(s Status, _ bool) bool { return s.SignalLow })
	f.setSignal(wlanIndex, -60)
	h.f.send(rssiMsg(wlanIndex, unix.NL80211_CQM_RSSI_THRESHOLD_EVENT_HIGH, 0))
	if w := h.nextWifi("signal"); w.Signal != -60 || w.Detail != "high" {
		t.Errorf("CQM high = %+v", w)
	}

	// Deauths for another interface or another BSS change nothing.
	h.f.send(deauthMsg(9, deauthFrame(ap1, ap1, 3)))
	h.f.send(deauthMsg(wlanIndex, deauthFrame(ap2, ap2, 3)))
	h.barrier(wlanIndex)

	// The AP leaves: one "disconnected" for the deauth and the DISCONNECT
	// that follows it, naming the lost network and the reason.
	f.disassociate(wlanIndex)
	h.f.send(deauthMsg(wlanIndex, deauthFrame(ap1, ap1, 3)))
	w = h.nextWifi("disconnected")
	if w.Reason != 3 || w.Detail != "deauth_by_ap" || w.SSID != "home" || w.BSSID != ap1.String() || w.Signal != 0 {
		t.Errorf("deauth = %+v", w)
	}
	h.f.send(disconnectMsg(wlanIndex, 3, true))
	h.barrier(wlanIndex)
	st = h.waitStatus("wifi1", func(s Status, _ bool) bool { return !s.Connected })
	if st.Reason != 3 || st.SSID != "" || st.CQM {
		t.Errorf("status after deauth = %+v", st)
	}

	// Reassociation (to another AP) re-arms CQM.
	f.associate(wlanIndex, "home", ap2, 2437, -50)
	h.f.send(connectMsg(wlanIndex, ap2, 0))
	if w := h.nextWifi("connected"); w.BSSID != ap2.String() || w.Frequency != 2437 || w.Signal != -50 || w.Detail != "" {
		t.Errorf("connect = %+v", w)
	}
	if n := len(f.calls()); n != 2 {
		t.Errorf("SET_CQM calls after reconnect = %d, want 2", n)
	}

	// A reassociation elsewhere without a disconnect, and a roam
	// notification, are both "roamed".
	f.associate(wlanIndex, "home", ap1, 2412, -52)
	h.f.send(connectMsg(wlanIndex, ap1, 0))
	if w := h.nextWifi("roamed"); w.BSSID != ap1.String() {
		t.Errorf("reassociation = %+v", w)
	}
	f.associate(wlanIndex, "home", ap2, 2437, -51)
	h.f.send(msg(unix.NL80211_CMD_ROAM, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NL80211_ATTR_IFINDEX, wlanIndex)
		ae.Bytes(unix.NL80211_ATTR_MAC, ap2)
	}))
	if w := h.nextWifi("roamed"); w.BSSID != ap2.String() || w.Frequency != 2437 {
		t.Errorf("roam = %+v", w)
	}

	// A failed attempt while connected ends the association.
	h.f.send(connectMsg(wlanIndex, ap1, 17))
	if w := h.nextWifi("disconnected"); w.Reason != 17 || w.Detail != "connect_failed" {
		t.Errorf("failed connect = %+v", w)
	}
	h.f.send(connectMsg(wlanIndex, ap2, 0))
	h.nextWifi("connected")

	h.f.send(cqmMsg(wlanIndex, func(ae *netlink.AttributeEncoder) { ae.Uint32(unix.NL80211_ATTR_CQM_PKT_LOSS_EVENT, 50) }))
	if w := h.nextWifi("packet_loss"); w.Detail != "50 packets" {
		t.Errorf("packet loss = %+v", w)
	}
	h.f.send(rssiMsg(wlanIndex, unix.NL80211_CQM_RSSI_BEACON_LOSS_EVENT, 0))
	h.nextWifi("beacon_loss")

	// Garbage does not stop the source.
	h.f.send(genetlink.Message{Header: genetlink.Header{Command: unix.NL80211_CMD_DISCONNECT}, Data: []byte{0xff, 0x00, 0x03}})
	h.f.send(msg(unix.NL80211_CMD_DISCONNECT, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NL80211_ATTR_IFINDEX, wlanIndex)
		ae.Bytes(unix.NL80211_ATTR_REASON_CODE, []byte{1, 2, 3}) // not a u16
	}))
	h.f.send(deauthMsg(wlanIndex, []byte{0xc0, 0}))
	h.barrier(wlanIndex)

	// Locally initiated disconnection.
	h.f.send(disconnectMsg(wlanIndex, 3, false))
	if w := h.nextWifi("disconnected"); w.Detail != "disconnect_local" || w.Reason != 3 {
		t.Errorf("local disconnect = %+v", w)
	}

	// The wired WAN never produced an event (every event above was
	// checked to be wlan0's kind in order) and is reported once.
	if st, ok := h.s.Status("wired"); !ok || st.Wireless || st.Connected {
		t.Errorf("wired status = %+v, %v", st, ok)
	}
	if n := h.logs.count("not an nl80211 interface"); n != 1 {
		t.Errorf("wired interface logged %d times, want once:\n%s", n, h.logs)
	}
	if n := h.logs.count("level=WARN") + h.logs.count("level=ERROR"); n != 0 {
		t.Errorf("%d warnings/errors logged:\n%s", n, h.logs)
	}

	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("run = %v, want nil after cancel", err)
		}
		h.done <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	select {
	case <-f.closed:
	default:
		t.Error("the event socket was not closed")
	}
}

// TestReconfigure checks that SetInterfaces during Run re-arms CQM with new
// thresholds, disarms it when min_signal goes away, and forgets removed WANs.
func TestReconfigure(t *testing.T) {
	f := newFakeKernel(t)
	f.ifaces = []*wifi.Interface{wlan0()}
	f.associate(wlanIndex, "home", ap1, 2412, -55)
	h := startHarness(t, f, []Interface{{WAN: "wifi1", Name: "wlan0", MinSignal: -70, Hysteresis: 4}})
	h.nextWifi("connected")
	h.waitStatus("wifi1", func(s Status, _ bool) bool { return s.CQM })

	h.s.SetInterfaces([]Interface{{WAN: "wifi1", Name: "wlan0", MinSignal: -62, Hysteresis: 2}})
	h.waitCalls(2)
	h.s.SetInterfaces([]Interface{{WAN: "wifi1", Name: "wlan0"}})
	h.waitCalls(3)
	h.waitStatus("wifi1", func(s Status, _ bool) bool { return !s.CQM })
	calls := f.calls()
	wantCalls := []cqmCall{{wlanIndex, -70, 4, 0}, {wlanIndex, -62, 2, 0}, {wlanIndex, 0, 0, 0}}
	if len(calls) != len(wantCalls) {
		t.Fatalf("SET_CQM calls = %+v, want %+v", calls, wantCalls)
	}
	for i := range calls {
		calls[i].flags = 0
		if calls[i] != wantCalls[i] {
			t.Errorf("SET_CQM call %d = %+v, want %+v", i, calls[i], wantCalls[i])
		}
	}
	if st, _ := h.s.Status("wifi1"); st.CQM || !st.Connected {
		t.Errorf("status without min_signal = %+v", st)
	}

	h.s.SetInterfaces(nil)
	h.waitStatus("wifi1", func(_ Status, ok bool) bool { return !ok })
	h.s.SetInterfaces([]Interface{{WAN: "wifi2", Name: "wlan0"}})
	// Seen anew (as another WAN): reported as initial state.
	e := h.next()
	if w, _ := e.Data.(reactor.WifiChange); e.WAN != "wifi2" || w.Kind != "connected" || w.Detail != "initial" {
		t.Errorf("after re-adding: %+v", e)
	}
}

// TestPollingFallback: a driver refusing SET_CQM gets its signal classified
// from polled station info, with hysteresis on the way up.
func TestPollingFallback(t *testing.T) {
	f := newFakeKernel(t)
	f.ifaces = []*wifi.Interface{wlan0()}
	f.cqmErrno = int(unix.EOPNOTSUPP)
	f.associate(wlanIndex, "home", ap1, 2412, -65)
	h := startHarness(t, f, []Interface{{WAN: "wifi1", Name: "wlan0", MinSignal: -70, Hysteresis: 4}})
	h.nextWifi("connected")
	// Classified at once when CQM is refused, not a poll period later.
	if w := h.nextWifi("signal"); w.Detail != "high" || w.Signal != -65 {
		t.Errorf("first classification = %+v", w)
	}
	st := h.waitStatus("wifi1", func(s Status, _ bool) bool { return s.Polling })
	if st.CQM {
		t.Errorf("status = %+v, want CQM false", st)
	}

	steps := []struct {
		signal int
		want   string // "" = no event
	}{
		{-69, ""}, {-71, "low"}, {-75, ""}, {-67, ""}, {-66, "high"}, {-70, ""}, {-71, "low"},
	}
	for _, s := range steps {
		f.setSignal(wlanIndex, s.signal)
		h.tick()
		if s.want == "" {
			h.barrier(wlanIndex)
			continue
		}
		if w := h.nextWifi("signal"); w.Detail != s.want || w.Signal != s.signal {
			t.Errorf("signal %d: event %+v, want %q", s.signal, w, s.want)
		}
	}
	if st, _ := h.s.Status("wifi1"); st.Signal != -71 || !st.SignalLow {
		t.Errorf("status = %+v", st)
	}
	if n := len(f.calls()); n != 1 {
		t.Errorf("SET_CQM tried %d times, want once (support does not come back)", n)
	}
	if n := h.logs.count("driver has no CQM support"); n != 1 {
		t.Errorf("fallback logged %d times, want once", n)
	}
}

// TestResync covers lost notifications (socket overflow) and interfaces
// that appear and vanish, announced on the "config" group.
func TestResync(t *testing.T) {
	f := newFakeKernel(t)
	h := startHarness(t, f, []Interface{{WAN: "wifi1", Name: "wlan0", MinSignal: -70, Hysteresis: 4}})
	h.waitStatus("wifi1", func(s Status, ok bool) bool { return ok && !s.Wireless })

	// A dongle is plugged in, already associated.
	f.mu.Lock()
	f.ifaces = []*wifi.Interface{wlan0()}
	f.mu.Unlock()
	f.associate(wlanIndex, "home", ap1, 2412, -55)
	h.f.send(msg(unix.NL80211_CMD_NEW_INTERFACE, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NL80211_ATTR_IFINDEX, wlanIndex)
		ae.String(unix.NL80211_ATTR_IFNAME, "wlan0")
	}))
	if w := h.nextWifi("connected"); w.Detail != "initial" || w.Index != wlanIndex {
		t.Errorf("new interface = %+v", w)
	}

	// Notifications are lost; the overflow makes the source compare.
	f.disassociate(wlanIndex)
	select {
	case f.recvErr <- unix.ENOBUFS:
	case <-time.After(5 * time.Second):
		t.Fatal("receive error not taken")
	}
	if w := h.nextWifi("disconnected"); w.Detail != "resync" {
		t.Errorf("after overflow = %+v", w)
	}
	f.associate(wlanIndex, "home", ap1, 2412, -55)
	h.f.send(connectMsg(wlanIndex, ap1, 0))
	h.nextWifi("connected")

	// The dongle is pulled.
	f.mu.Lock()
	f.ifaces = nil
	f.mu.Unlock()
	h.f.send(msg(unix.NL80211_CMD_DEL_INTERFACE, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NL80211_ATTR_IFINDEX, wlanIndex)
	}))
	if w := h.nextWifi("disconnected"); w.Detail != "gone" || w.Index != wlanIndex {
		t.Errorf("removed interface = %+v", w)
	}
	h.waitStatus("wifi1", func(s Status, _ bool) bool { return !s.Wireless && !s.Connected })
}

// TestReceiveError: a socket failure other than overflow ends Run with the
// error wrapped, instead of spinning.
func TestReceiveError(t *testing.T) {
	f := newFakeKernel(t)
	h := startHarness(t, f, nil)
	select {
	case f.recvErr <- errBoom:
	case <-time.After(5 * time.Second):
		t.Fatal("receive error not taken")
	}
	select {
	case err := <-h.done:
		if err == nil || !errors.Is(err, errBoom) {
			t.Errorf("run = %v, want the receive error", err)
		}
		h.done <- nil
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after a receive error")
	}
}

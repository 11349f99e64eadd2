package wifi

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func TestDecodeNotification(t *testing.T) {
	n, err := decodeNotification(connectMsg(7, ap1, 0))
	if err != nil || n.cmd != unix.NL80211_CMD_CONNECT || n.ifindex != 7 || n.mac.String() != ap1.String() || n.status != 0 || n.timedOut {
		t.Errorf("connect: %+v, %v", n, err)
	}
	n, err = decodeNotification(msg(unix.NL80211_CMD_CONNECT, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NL80211_ATTR_IFINDEX, 7)
		ae.Uint16(unix.NL80211_ATTR_STATUS_CODE, 1)
		ae.Flag(unix.NL80211_ATTR_TIMED_OUT, true)
	}))
	if err != nil || n.status != 1 || !n.timedOut || n.mac != nil {
		t.Errorf("timed-out connect: %+v, %v", n, err)
	}
	n, err = decodeNotification(disconnectMsg(7, 4, true))
	if err != nil || n.reason != 4 || !n.byAP {
		t.Errorf("disconnect: %+v, %v", n, err)
	}
	n, err = decodeNotification(disconnectMsg(7, 8, false))
	if err != nil || n.reason != 8 || n.byAP || n.status != -1 {
		t.Errorf("local disconnect: %+v, %v", n, err)
	}
	n, err = decodeNotification(rssiMsg(7, unix.NL80211_CQM_RSSI_THRESHOLD_EVENT_LOW, -81))
	if err != nil || n.cqm == nil || *n.cqm != (cqmNotification{rssiEvent: 0, rssiLevel: -81, pktLoss: -1}) {
		t.Errorf("cqm low: %+v %+v, %v", n, n.cqm, err)
	}
	n, err = decodeNotification(beaconLossMsg(7))
	if err != nil || n.cqm == nil || *n.cqm != (cqmNotification{rssiEvent: -1, beaconLoss: true, pktLoss: -1}) {
		t.Errorf("beacon loss: %+v, %v", n.cqm, err)
	}
	n, err = decodeNotification(msg(unix.NL80211_CMD_CH_SWITCH_NOTIFY, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NL80211_ATTR_IFINDEX, 7)
		ae.Uint32(unix.NL80211_ATTR_WIPHY_FREQ, 5180)
	}))
	if err != nil || n.freq != 5180 {
		t.Errorf("channel switch: %+v, %v", n, err)
	}

	for name, m := range map[string]genetlink.Message{
		"truncated attribute": {Header: genetlink.Header{Command: unix.NL80211_CMD_DISCONNECT}, Data: []byte{0x08, 0x00, 0x03}},
		"u16 of 3 bytes": msg(unix.NL80211_CMD_DISCONNECT, func(ae *netlink.AttributeEncoder) {
			ae.Bytes(unix.NL80211_ATTR_REASON_CODE, []byte{1, 2, 3})
		}),
		"cqm level of 2 bytes": cqmMsg(7, func(ae *netlink.AttributeEncoder) {
			ae.Bytes(unix.NL80211_ATTR_CQM_RSSI_LEVEL, []byte{1, 2})
		}),
	} {
		if _, err := decodeNotification(m); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func TestParseMgmtFrame(t *testing.T) {
	f, ok := parseMgmtFrame(deauthFrame(ap1, ap2, 0x0103))
	if !ok || f.sa.String() != ap1.String() || f.bssid.String() != ap2.String() || f.reason != 0x0103 {
		t.Errorf("frame = %+v, %v", f, ok)
	}
	if _, ok := parseMgmtFrame(make([]byte, 25)); ok {
		t.Error("a 25-byte frame parsed")
	}
}

// TestCQMRequest checks the wire format of SET_CQM byte by byte where it
// matters: the threshold is a native-endian s32, the hysteresis a u32, both
// nested in NL80211_ATTR_CQM next to the interface index.
func TestCQMRequest(t *testing.T) {
	m, err := cqmRequest(1, 42, -40, 4)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Command != unix.NL80211_CMD_SET_CQM || m.Header.Version != 1 {
		t.Errorf("header = %+v", m.Header)
	}
	attrs, err := netlink.UnmarshalAttributes(m.Data)
	if err != nil || len(attrs) != 2 {
		t.Fatalf("attrs = %+v, %v", attrs, err)
	}
	if attrs[0].Type != unix.NL80211_ATTR_IFINDEX || binary.NativeEndian.Uint32(attrs[0].Data) != 42 {
		t.Errorf("ifindex attr = %+v", attrs[0])
	}
	if attrs[1].Type&^unix.NLA_F_NESTED != unix.NL80211_ATTR_CQM {
		t.Fatalf("second attr type = %#x", attrs[1].Type)
	}
	nested, err := netlink.UnmarshalAttributes(attrs[1].Data)
	if err != nil || len(nested) != 2 {
		t.Fatalf("nested = %+v, %v", nested, err)
	}
	thold := binary.NativeEndian.AppendUint32(nil, uint32(0xffffffd8)) // -40
	if nested[0].Type != unix.NL80211_ATTR_CQM_RSSI_THOLD || !bytes.Equal(nested[0].Data, thold) {
		t.Errorf("threshold attr = %+v, want % x", nested[0], thold)
	}
	if nested[1].Type != unix.NL80211_ATTR_CQM_RSSI_HYST || binary.NativeEndian.Uint32(nested[1].Data) != 4 {
		t.Errorf("hysteresis attr = %+v", nested[1])
	}
}

// FuzzDecodeNotification: no input makes decoding panic.
func FuzzDecodeNotification(f *testing.F) {
	for _, m := range []genetlink.Message{connectMsg(3, ap1, 0), disconnectMsg(3, 3, true), rssiMsg(3, 0, -70),
		deauthMsg(3, deauthFrame(ap1, ap1, 3))} {
		f.Add(m.Header.Command, m.Data)
	}
	f.Fuzz(func(t *testing.T, cmd uint8, data []byte) {
		n, _ := decodeNotification(genetlink.Message{Header: genetlink.Header{Command: cmd}, Data: data})
		parseMgmtFrame(n.frame)
	})
}

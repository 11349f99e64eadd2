package wifi

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkDecodeCQM is the frequent nl80211 message: a signal threshold
// crossing.
func BenchmarkDecodeCQM(b *testing.B) {
	m := rssiMsg(7, unix.NL80211_CQM_RSSI_THRESHOLD_EVENT_LOW, -81)
	b.ReportAllocs()
	for b.Loop() {
		n, err := decodeNotification(m)
		if err != nil || n.cqm == nil {
			b.Fatalf("%+v, %v", n, err)
		}
	}
}

// BenchmarkDecodeDisconnect is the message that takes a Wi-Fi WAN down.
func BenchmarkDecodeDisconnect(b *testing.B) {
	m := disconnectMsg(7, 4, true)
	b.ReportAllocs()
	for b.Loop() {
		n, err := decodeNotification(m)
		if err != nil || n.reason != 4 {
			b.Fatalf("%+v, %v", n, err)
		}
	}
}

// BenchmarkParseMgmtFrame reads a deauthentication frame.
func BenchmarkParseMgmtFrame(b *testing.B) {
	f := make([]byte, 26)
	f[0] = 0xc0
	copy(f[10:16], []byte{2, 0, 0, 0, 0, 1})
	copy(f[16:22], []byte{2, 0, 0, 0, 0, 1})
	f[24] = 3
	b.ReportAllocs()
	for b.Loop() {
		if fr, ok := parseMgmtFrame(f); !ok || fr.reason != 3 {
			b.Fatalf("%+v", fr)
		}
	}
}

package wifi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The nl80211 constants come from golang.org/x/sys/unix, which carries the
// kernel's include/uapi/linux/nl80211.h; mdlayher/wifi keeps its own copy
// internal.

// notification is one decoded nl80211 multicast message: only the attributes
// the source acts upon, every one optional.
type notification struct {
	cmd     uint8
	ifindex int
	ifname  string
	// mac is NL80211_ATTR_MAC: the (new) BSSID for connect and roam.
	mac net.HardwareAddr
	// status is the IEEE 802.11 status code of a connect result; -1 when
	// absent. timedOut marks a connect attempt without any answer.
	status   int
	timedOut bool
	// reason is the IEEE 802.11 reason code of a disconnect (0 if absent);
	// byAP is NL80211_ATTR_DISCONNECTED_BY_AP.
	reason int
	byAP   bool
	// frame is the management frame of deauth/disassoc notifications.
	frame []byte
	freq  int
	cqm   *cqmNotification
}

// cqmNotification is the nested NL80211_ATTR_CQM of NL80211_CMD_NOTIFY_CQM.
type cqmNotification struct {
	// rssiEvent is NL80211_CQM_RSSI_THRESHOLD_EVENT_LOW/HIGH (or the old
	// BEACON_LOSS_EVENT value); -1 when absent.
	rssiEvent int
	// rssiLevel is the signal (dBm) that crossed the threshold; 0 when the
	// kernel (before 4.12) does not report it.
	rssiLevel int
	// beaconLoss is NL80211_ATTR_CQM_BEACON_LOSS_EVENT.
	beaconLoss bool
	// pktLoss is the number of consecutive lost packets; -1 when absent.
	pktLoss int
}

// decodeNotification extracts what the source needs from one message. It
// never panics on malformed input: a short or garbled attribute yields an
// error and the message is skipped.
func decodeNotification(m genetlink.Message) (notification, error) {
	n := notification{cmd: m.Header.Command, status: -1}
	ad, err := netlink.NewAttributeDecoder(m.Data)
	if err != nil {
		return n, fmt.Errorf("nl80211 command %d: %w", m.Header.Command, err)
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NL80211_ATTR_IFINDEX:
			n.ifindex = int(ad.Uint32())
		case unix.NL80211_ATTR_IFNAME:
			n.ifname = ad.String()
		case unix.NL80211_ATTR_MAC:
			if b := ad.Bytes(); len(b) == 6 {
				n.mac = net.HardwareAddr(bytes.Clone(b))
			}
		case unix.NL80211_ATTR_STATUS_CODE:
			n.status = int(ad.Uint16())
		case unix.NL80211_ATTR_TIMED_OUT:
			n.timedOut = true
		case unix.NL80211_ATTR_REASON_CODE:
			n.reason = int(ad.Uint16())
		case unix.NL80211_ATTR_DISCONNECTED_BY_AP:
			n.byAP = true
		case unix.NL80211_ATTR_FRAME:
			n.frame = bytes.Clone(ad.Bytes())
		case unix.NL80211_ATTR_WIPHY_FREQ:
			n.freq = int(ad.Uint32())
		case unix.NL80211_ATTR_CQM:
			c := &cqmNotification{rssiEvent: -1, pktLoss: -1}
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					switch nad.Type() {
					case unix.NL80211_ATTR_CQM_RSSI_THRESHOLD_EVENT:
						c.rssiEvent = int(nad.Uint32())
					case unix.NL80211_ATTR_CQM_RSSI_LEVEL:
						c.rssiLevel = int(nad.Int32())
					case unix.NL80211_ATTR_CQM_BEACON_LOSS_EVENT:
						c.beaconLoss = true
					case unix.NL80211_ATTR_CQM_PKT_LOSS_EVENT:
						c.pktLoss = int(nad.Uint32())
					}
				}
				return nil
			})
			n.cqm = c
		}
	}
	if err := ad.Err(); err != nil {
		return n, fmt.Errorf("nl80211 command %d: %w", m.Header.Command, err)
	}
	return n, nil
}

// mgmtFrame is the part of an 802.11 deauthentication or disassociation
// frame the source reads: who sent it, for which BSS, and why.
type mgmtFrame struct {
	sa, bssid net.HardwareAddr
	reason    int
}

// parseMgmtFrame reads a deauth/disassoc frame: a 24-byte management header
// (frame control, duration, DA, SA, BSSID, sequence) followed by the 2-byte
// little-endian reason code.
func parseMgmtFrame(b []byte) (mgmtFrame, bool) {
	const hdr = 24
	if len(b) < hdr+2 {
		return mgmtFrame{}, false
	}
	return mgmtFrame{
		sa:     net.HardwareAddr(bytes.Clone(b[10:16])),
		bssid:  net.HardwareAddr(bytes.Clone(b[16:22])),
		reason: int(binary.LittleEndian.Uint16(b[hdr : hdr+2])),
	}, true
}

// cqmRequest builds NL80211_CMD_SET_CQM for an interface: one RSSI threshold
// with hysteresis. A zero threshold disables RSSI monitoring (the kernel's
// convention).
func cqmRequest(version uint8, ifindex, threshold, hysteresis int) (genetlink.Message, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.NL80211_ATTR_IFINDEX, uint32(ifindex))
	ae.Nested(unix.NL80211_ATTR_CQM, func(nae *netlink.AttributeEncoder) error {
		// THOLD is an array of s32 since Linux 4.12 (one element here, which
		// every kernel accepts); HYST is a u32.
		nae.Int32(unix.NL80211_ATTR_CQM_RSSI_THOLD, int32(threshold))
		nae.Uint32(unix.NL80211_ATTR_CQM_RSSI_HYST, uint32(hysteresis))
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		return genetlink.Message{}, fmt.Errorf("encoding SET_CQM: %w", err)
	}
	return genetlink.Message{
		Header: genetlink.Header{Command: unix.NL80211_CMD_SET_CQM, Version: version},
		Data:   b,
	}, nil
}

// setCQM arms (or, with threshold 0, disarms) CQM RSSI monitoring.
func setCQM(c *genetlink.Conn, f genetlink.Family, ifindex, threshold, hysteresis int) error {
	req, err := cqmRequest(f.Version, ifindex, threshold, hysteresis)
	if err != nil {
		return err
	}
	if _, err := c.Execute(req, f.ID, netlink.Request|netlink.Acknowledge); err != nil {
		return fmt.Errorf("SET_CQM on ifindex %d (threshold %d dBm, hysteresis %d dB): %w", ifindex, threshold, hysteresis, err)
	}
	return nil
}

// cmdName names the nl80211 commands the source handles, for logs.
func cmdName(cmd uint8) string {
	switch cmd {
	case unix.NL80211_CMD_CONNECT:
		return "connect"
	case unix.NL80211_CMD_ROAM:
		return "roam"
	case unix.NL80211_CMD_DISCONNECT:
		return "disconnect"
	case unix.NL80211_CMD_DEAUTHENTICATE:
		return "deauth"
	case unix.NL80211_CMD_DISASSOCIATE:
		return "disassoc"
	case unix.NL80211_CMD_NOTIFY_CQM:
		return "cqm"
	default:
		return fmt.Sprintf("cmd%d", cmd)
	}
}

package wifi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/wifi"
	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

// tri is a boolean that may not be known yet.
type tri int8

const (
	unknown tri = iota
	yes
	no
)

// cqmMode is how signal crossings of one interface are learned.
type cqmMode int8

const (
	cqmNotArmed    cqmMode = iota // not (yet) configured for this association
	cqmArmed                      // the kernel watches the threshold
	cqmUnsupported                // the driver refused: poll station info
	cqmOff                        // no min_signal configured
)

// linkInfo is what is known about the current association.
type linkInfo struct {
	ssid, bssid string
	freq        int
	signal      int // dBm, 0 unknown
	bitrate     int // kbit/s
}

// ifState is the source's view of one configured interface. It is owned by
// the loop goroutine.
type ifState struct {
	cfg Interface
	// ifi is nil while the interface is absent or not an nl80211 interface.
	ifi *wifi.Interface
	// notWireless is set once "not an nl80211 interface" has been logged,
	// so that it is logged once per absence, not at every resync.
	notWireless bool

	conn tri
	link linkInfo
	// low is the last signal classification reported ("low" = yes).
	low tri

	cqm                   cqmMode
	armedThold, armedHyst int
	reason                int
	since, updated        time.Time
	lastErr               string
}

func (st *ifState) index() int {
	if st.ifi == nil {
		return 0
	}
	return st.ifi.Index
}

type loop struct {
	s      *Source
	k      *kernel
	emit   func(reactor.Event)
	states map[stateKey]*ifState
}

// stateKey identifies an ifState: a WAN renamed by a reload is a new WAN for
// the reducer and gets its initial state reported, even on the same
// interface.
type stateKey struct{ wan, name string }

type recvResult struct {
	msgs []genetlink.Message
	err  error
}

// run is Run after the sockets are open; tests call it with fakes.
func (s *Source) run(ctx context.Context, k *kernel, ticks <-chan time.Time, emit func(reactor.Event)) error {
	l := &loop{s: s, k: k, emit: emit, states: map[stateKey]*ifState{}}
	recvd := make(chan recvResult)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			msgs, _, err := k.events.Receive()
			select {
			case recvd <- recvResult{msgs: msgs, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil && !errors.Is(err, unix.ENOBUFS) {
				return
			}
		}
	}()
	defer func() {
		k.close()
		wg.Wait()
	}()

	// The initial resync reads the current interface list, so a
	// SetInterfaces from before Run needs no second pass.
	select {
	case <-s.changed:
	default:
	}
	l.resync("initial")
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-recvd:
			if r.err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if errors.Is(r.err, unix.ENOBUFS) {
					// The socket overflowed: notifications were lost, so
					// compare the kernel's state with ours instead.
					s.log.Warn("nl80211 event socket overflowed; resynchronizing")
					l.resync("resync")
					continue
				}
				return fmt.Errorf("wifi: receiving nl80211 events: %w", r.err)
			}
			for _, m := range r.msgs {
				l.handle(m)
			}
		case <-s.changed:
			l.resync("resync")
		case <-ticks:
			l.poll()
		}
	}
}

// resync compares the configured interfaces with the kernel's and reports
// what differs from what was last reported. detail goes into the events it
// emits ("initial" for interfaces seen for the first time).
func (l *loop) resync(detail string) {
	cfgs := l.s.interfaces()
	want := map[stateKey]bool{}
	for _, c := range cfgs {
		want[stateKey{c.WAN, c.Name}] = true
	}
	for key := range l.states {
		if !want[key] {
			delete(l.states, key)
		}
	}
	ifis, err := l.k.query.Interfaces()
	if err != nil {
		l.s.log.Warn("listing nl80211 interfaces failed", "err", err)
		return
	}
	byName := map[string]*wifi.Interface{}
	for _, ifi := range ifis {
		// P2P-device and NAN wdevs have no netdev (no name or index).
		if ifi.Name != "" && ifi.Index > 0 {
			byName[ifi.Name] = ifi
		}
	}
	for _, c := range cfgs {
		st := l.states[stateKey{c.WAN, c.Name}]
		d := detail
		if st == nil {
			st = &ifState{}
			l.states[stateKey{c.WAN, c.Name}] = st
			d = "initial"
		}
		st.cfg = c
		ifi := byName[c.Name]
		if ifi == nil {
			l.gone(st)
			continue
		}
		if st.ifi == nil || st.ifi.Index != ifi.Index {
			// New, or re-created under the same name: nothing we knew
			// about the old one (CQM, driver support) carries over.
			*st = ifState{cfg: c, conn: st.conn, link: st.link}
			if st.conn == unknown {
				d = "initial"
			}
			l.s.log.Info("watching Wi-Fi interface", "wan", c.WAN, "interface", c.Name, "index", ifi.Index)
		}
		st.ifi = ifi
		l.sync(st, d)
	}
}

// gone handles a configured interface that is absent or has no nl80211.
func (l *loop) gone(st *ifState) {
	wasConnected := st.conn == yes
	if !st.notWireless {
		l.s.log.Info("not an nl80211 interface (wired or absent): no Wi-Fi events for it",
			"wan", st.cfg.WAN, "interface", st.cfg.Name)
	}
	if wasConnected {
		l.event(st, st.index(), "disconnected", func(w *reactor.WifiChange) {
			w.Signal, w.Bitrate = 0, 0
			w.Detail = "gone"
		})
	}
	*st = ifState{cfg: st.cfg, notWireless: true, since: st.since, updated: l.now()}
	if wasConnected {
		st.conn = no
		st.since = st.updated
	}
	l.publish(st)
}

// sync reads the association state from the kernel and reports a change.
func (l *loop) sync(st *ifState, detail string) {
	info, connected, err := l.readLink(st)
	if err != nil {
		l.noteErr(st, "reading link state", err)
		return
	}
	switch {
	case connected && st.conn == yes && st.link.bssid != "" && info.bssid != st.link.bssid:
		st.link = info
		l.associated(st, "roamed", detail)
	case connected && st.conn != yes:
		st.link = info
		l.associated(st, "connected", detail)
	case connected:
		st.link = info
		l.armCQM(st, false)
		st.updated = l.now()
		l.publish(st)
	case st.conn != no:
		l.disconnected(st, 0, detail)
	default:
		l.publish(st)
	}
}

// readLink asks the kernel whether the interface is associated and, if so,
// with what. A station's BSS carries an association status; station info of
// that BSS carries signal and bitrate.
func (l *loop) readLink(st *ifState) (linkInfo, bool, error) {
	bss, err := l.k.query.BSS(st.ifi)
	if errors.Is(err, os.ErrNotExist) {
		return linkInfo{}, false, nil
	}
	if err != nil {
		return linkInfo{}, false, fmt.Errorf("BSS: %w", err)
	}
	if bss.Status != wifi.BSSStatusAssociated && bss.Status != wifi.BSSStatusIBSSJoined {
		return linkInfo{}, false, nil
	}
	info := linkInfo{ssid: bss.SSID, bssid: bss.BSSID.String(), freq: bss.Frequency}
	if sig, rate, ok := l.readStation(st, bss.BSSID.String()); ok {
		info.signal, info.bitrate = sig, rate
	}
	return info, true, nil
}

// readStation returns signal (dBm) and transmit bitrate (kbit/s) of the
// station entry for bssid (a client interface has one: its AP).
func (l *loop) readStation(st *ifState, bssid string) (signal, bitrate int, ok bool) {
	stas, err := l.k.query.StationInfo(st.ifi)
	if err != nil {
		l.noteErr(st, "reading station info", err)
		return 0, 0, false
	}
	var pick *wifi.StationInfo
	for _, s := range stas {
		if pick == nil || s.HardwareAddr.String() == bssid {
			pick = s
		}
	}
	if pick == nil {
		return 0, 0, false
	}
	signal = pick.Signal
	if signal == 0 {
		signal = pick.SignalAverage
	}
	return signal, pick.TransmitBitrate / 1000, true
}

// handle acts on one multicast message.
func (l *loop) handle(m genetlink.Message) {
	n, err := decodeNotification(m)
	if err != nil {
		// A kernel ABI surprise, not an operational problem: keep it out
		// of the normal log.
		l.s.log.Debug("skipping undecodable nl80211 message", "err", err)
		return
	}
	switch n.cmd {
	case unix.NL80211_CMD_NEW_INTERFACE, unix.NL80211_CMD_DEL_INTERFACE, unix.NL80211_CMD_SET_INTERFACE:
		if l.concerns(n) {
			l.resync("resync")
		}
		return
	}
	st := l.byIndex(n.ifindex)
	if st == nil {
		return
	}
	switch n.cmd {
	case unix.NL80211_CMD_CONNECT:
		if n.status != 0 || n.timedOut {
			l.s.log.Debug("association attempt failed", "wan", st.cfg.WAN, "interface", st.cfg.Name,
				"status", n.status, "timed_out", n.timedOut)
			if st.conn == yes {
				l.disconnected(st, n.status, "connect_failed")
			}
			return
		}
		l.connectedEvent(st, n, "connected")
	case unix.NL80211_CMD_ROAM:
		l.connectedEvent(st, n, "roamed")
	case unix.NL80211_CMD_DISCONNECT:
		detail := "disconnect_local"
		if n.byAP {
			detail = "disconnect_by_ap"
		}
		if st.conn != no {
			l.disconnected(st, n.reason, detail)
		} else if n.reason != 0 {
			st.reason = n.reason
			l.publish(st)
		}
	case unix.NL80211_CMD_DEAUTHENTICATE, unix.NL80211_CMD_DISASSOCIATE:
		f, ok := parseMgmtFrame(n.frame)
		if !ok {
			l.s.log.Debug("skipping nl80211 "+cmdName(n.cmd)+" without frame", "interface", st.cfg.Name)
			return
		}
		// cfg80211 reports such frames even when they are not for our
		// BSS (it checks afterwards); only ours end the association.
		if st.link.bssid != "" && f.bssid.String() != st.link.bssid {
			return
		}
		if st.conn != yes {
			return
		}
		by := "_by_ap"
		if st.ifi.HardwareAddr != nil && bytes.Equal(f.sa, st.ifi.HardwareAddr) {
			by = "_local"
		}
		l.disconnected(st, f.reason, cmdName(n.cmd)+by)
	case unix.NL80211_CMD_NOTIFY_CQM:
		if n.cqm != nil {
			l.cqmEvent(st, n.cqm)
		}
	case unix.NL80211_CMD_CH_SWITCH_NOTIFY:
		if n.freq != 0 && st.conn == yes {
			st.link.freq = n.freq
			st.updated = l.now()
			l.publish(st)
		}
	}
}

// concerns reports whether an interface add/remove/change notification is
// about a configured interface, by name or by the index we know.
func (l *loop) concerns(n notification) bool {
	for _, st := range l.states {
		if (n.ifname != "" && n.ifname == st.cfg.Name) || (n.ifindex != 0 && n.ifindex == st.index()) {
			return true
		}
	}
	return false
}

func (l *loop) byIndex(idx int) *ifState {
	if idx == 0 {
		return nil
	}
	for _, st := range l.states {
		if st.index() == idx {
			return st
		}
	}
	return nil
}

// connectedEvent handles a successful connect or roam notification.
func (l *loop) connectedEvent(st *ifState, n notification, kind string) {
	info, connected, err := l.readLink(st)
	if err != nil {
		l.noteErr(st, "reading link state", err)
	}
	if !connected {
		// The association may already be gone again (a DISCONNECT will
		// follow); still report it with what the event itself says.
		info = linkInfo{ssid: st.link.ssid}
		if n.mac != nil {
			info.bssid = n.mac.String()
		}
	}
	if kind == "connected" && st.conn == yes && st.link.bssid != "" && info.bssid != "" && info.bssid != st.link.bssid {
		// A reassociation to another AP without a disconnect in between.
		kind = "roamed"
	}
	st.link = info
	l.associated(st, kind, "")
}

// associated records a new association and reports it; CQM is re-armed
// because some drivers drop the configuration on disconnect.
func (l *loop) associated(st *ifState, kind, detail string) {
	st.conn = yes
	st.low = unknown
	st.reason = 0
	st.since = l.now()
	st.updated = st.since
	if st.cqm == cqmArmed {
		st.cqm = cqmNotArmed
	}
	l.event(st, st.index(), kind, func(w *reactor.WifiChange) { w.Detail = detail })
	l.armCQM(st, true)
	l.publish(st)
}

// disconnected records the end of an association and reports it, naming
// the network that was lost (but no signal or bitrate: those describe a
// live link).
func (l *loop) disconnected(st *ifState, reason int, detail string) {
	l.event(st, st.index(), "disconnected", func(w *reactor.WifiChange) {
		w.Signal, w.Bitrate = 0, 0
		w.Reason = reason
		w.Detail = detail
	})
	st.conn = no
	st.link = linkInfo{}
	st.low = unknown
	st.reason = reason
	st.since = l.now()
	st.updated = st.since
	if st.cqm == cqmArmed {
		st.cqm = cqmNotArmed
	}
	l.publish(st)
}

// cqmEvent turns one CQM notification into events.
func (l *loop) cqmEvent(st *ifState, c *cqmNotification) {
	now := l.now()
	switch c.rssiEvent {
	case unix.NL80211_CQM_RSSI_THRESHOLD_EVENT_LOW, unix.NL80211_CQM_RSSI_THRESHOLD_EVENT_HIGH:
		low := c.rssiEvent == unix.NL80211_CQM_RSSI_THRESHOLD_EVENT_LOW
		if sig, rate, ok := l.readStation(st, st.link.bssid); ok {
			st.link.signal, st.link.bitrate = sig, rate
		}
		// The event's own level is the (averaged) value that crossed the
		// threshold; the station's last-frame signal is the fallback for
		// kernels before 4.12 that do not send it.
		sig := c.rssiLevel
		if sig == 0 {
			sig = st.link.signal
		}
		l.signalEvent(st, low, sig)
	case unix.NL80211_CQM_RSSI_BEACON_LOSS_EVENT:
		c.beaconLoss = true
	}
	if c.beaconLoss {
		st.updated = now
		l.event(st, st.index(), "beacon_loss", nil)
	}
	if c.pktLoss >= 0 {
		st.updated = now
		l.event(st, st.index(), "packet_loss", func(w *reactor.WifiChange) {
			w.Detail = strconv.Itoa(c.pktLoss) + " packets"
		})
	}
	l.publish(st)
}

func (l *loop) signalEvent(st *ifState, low bool, signal int) {
	detail := "high"
	st.low = no
	if low {
		detail = "low"
		st.low = yes
	}
	st.updated = l.now()
	l.event(st, st.index(), "signal", func(w *reactor.WifiChange) {
		w.Signal = signal
		w.Detail = detail
	})
	l.publish(st)
}

// armCQM configures the RSSI threshold of an associated interface. Without
// force it only acts when the configuration differs from what is armed.
func (l *loop) armCQM(st *ifState, force bool) {
	if st.ifi == nil || st.conn != yes || st.cqm == cqmUnsupported {
		return
	}
	thold, hyst := st.cfg.MinSignal, max(st.cfg.Hysteresis, 0)
	if thold == 0 {
		if st.cqm == cqmArmed {
			// min_signal was removed by a reload: stop the notifications.
			if err := setCQM(l.k.cmds, l.k.family, st.ifi.Index, 0, 0); err != nil {
				l.noteErr(st, "disabling CQM", err)
			}
		}
		st.cqm = cqmOff
		return
	}
	if !force && st.cqm == cqmArmed && st.armedThold == thold && st.armedHyst == hyst {
		return
	}
	err := setCQM(l.k.cmds, l.k.family, st.ifi.Index, thold, hyst)
	if err == nil {
		st.cqm, st.armedThold, st.armedHyst = cqmArmed, thold, hyst
		l.s.log.Debug("CQM armed", "wan", st.cfg.WAN, "interface", st.cfg.Name, "threshold_dbm", thold, "hysteresis_db", hyst)
		return
	}
	st.cqm = cqmUnsupported
	if errors.Is(err, unix.EOPNOTSUPP) {
		l.s.log.Info("driver has no CQM support; polling station info for the signal",
			"wan", st.cfg.WAN, "interface", st.cfg.Name, "every", l.s.opts.PollInterval)
	} else {
		l.s.log.Warn("setting CQM failed; polling station info for the signal",
			"wan", st.cfg.WAN, "interface", st.cfg.Name, "every", l.s.opts.PollInterval, "err", err)
	}
	// Classify at once rather than at the next tick.
	l.pollOne(st)
}

// poll refreshes signal and bitrate of every associated interface; where
// CQM is unsupported it also stands in for it.
func (l *loop) poll() {
	for _, st := range l.states {
		if st.ifi != nil && st.conn == yes {
			l.pollOne(st)
		}
	}
}

func (l *loop) pollOne(st *ifState) {
	sig, rate, ok := l.readStation(st, st.link.bssid)
	if !ok {
		return
	}
	st.link.signal, st.link.bitrate = sig, rate
	st.updated = l.now()
	if st.cqm == cqmUnsupported && st.cfg.MinSignal != 0 && sig != 0 {
		// Same idea as the kernel's CQM: low below the threshold, high
		// again only hysteresis dB above it, so a signal hovering at the
		// threshold does not flap.
		thold, hyst := st.cfg.MinSignal, max(st.cfg.Hysteresis, 0)
		switch {
		case st.low != yes && sig < thold:
			l.signalEvent(st, true, sig)
			return
		case st.low == unknown && sig >= thold,
			st.low == yes && sig >= thold+hyst:
			l.signalEvent(st, false, sig)
			return
		}
	}
	l.publish(st)
}

// noteErr logs a query failure once until it changes, so a persistent
// problem does not repeat at every poll.
func (l *loop) noteErr(st *ifState, what string, err error) {
	msg := what + ": " + err.Error()
	if msg == st.lastErr {
		return
	}
	st.lastErr = msg
	l.s.log.Warn(what+" failed", "wan", st.cfg.WAN, "interface", st.cfg.Name, "err", err)
}

func (l *loop) now() time.Time { return l.s.opts.Now() }

// event emits one WifiChange carrying everything known about the link; mod
// sets the kind-specific fields.
func (l *loop) event(st *ifState, index int, kind string, mod func(*reactor.WifiChange)) {
	w := reactor.WifiChange{
		Index:     index,
		Name:      st.cfg.Name,
		Kind:      kind,
		SSID:      st.link.ssid,
		BSSID:     st.link.bssid,
		Frequency: st.link.freq,
		Signal:    st.link.signal,
		Bitrate:   st.link.bitrate,
	}
	if mod != nil {
		mod(&w)
	}
	l.emit(reactor.Event{Time: l.now(), WAN: st.cfg.WAN, Data: w})
}

func (l *loop) publish(st *ifState) {
	l.s.publish(Status{
		WAN:       st.cfg.WAN,
		Interface: st.cfg.Name,
		Index:     st.index(),
		Wireless:  st.ifi != nil,
		Connected: st.conn == yes,
		SSID:      st.link.ssid,
		BSSID:     st.link.bssid,
		Frequency: st.link.freq,
		Signal:    st.link.signal,
		Bitrate:   st.link.bitrate,
		CQM:       st.cqm == cqmArmed,
		Polling:   st.cqm == cqmUnsupported,
		SignalLow: st.low == yes,
		Reason:    st.reason,
		Since:     st.since,
		Updated:   st.updated,
	})
}

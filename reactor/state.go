package reactor

import (
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/wanreact/wanreact/config"
)

// Health is a WAN's verdict.
type Health string

const (
	Unknown  Health = "unknown"
	Up       Health = "up"
	Degraded Health = "degraded"
	Down     Health = "down"
)

// mainTable is RT_TABLE_MAIN.
const mainTable = 254

// recentSize is the length of the short, all-targets window that lets the
// down threshold react to loss setting in.
const recentSize = 20

// minSamplesForLoss is how many results (pooled over live targets) are needed
// before a loss rate is trusted for the degraded verdict.
const minSamplesForLoss = 20

// State is the reactor's whole memory. Apply is its only mutator; it is
// deterministic in (state, event), which is what makes replay possible.
type State struct {
	cfg     config.Config
	wans    []*wanState
	active  []ActiveMember
	desired Desired
	// haveConfig is false until the first ConfigLoaded event.
	haveConfig bool
	// synced is false until the link/address sources finished their
	// initial dump: deciding before that would, after a restart, briefly
	// take down routes that a previous run left working.
	synced bool
	// links holds every interface, WAN or not, so that a WAN added by a
	// reload starts from what the kernel already said about it.
	links map[int]*linkInfo
}

type linkInfo struct {
	name                     string
	adminUp, carrier, operUp bool
	// addrs are the IPv4 addresses netlink reports on the interface.
	addrs []netip.Prefix
	// defaultGW is the gateway of a main-table default route through this
	// interface (external addressing without a configured gateway).
	defaultGW netip.Addr
}

type wanState struct {
	cfg  config.WAN
	mark uint32

	// link is the interface as last reported by netlink (nil: absent).
	link  *linkInfo
	index int
	// lease is the current DHCP lease (addressing: dhcp).
	lease *LeaseChange

	// Wi-Fi, when the interface reported any nl80211 event.
	wifiSeen      bool
	wifiConnected bool
	signal        int

	health       Health
	since        time.Time
	reason       string
	downByProbes bool
	// judged is set once the WAN left Unknown the first time: after a
	// recovery an Unknown WAN must prove itself before carrying traffic.
	judged bool

	consecLost, consecOK int
	downAfter            int
	targets              map[netip.Addr]*window
	// recent holds the WAN's last recentSize probe results over all
	// targets, for a quick loss estimate (see effectiveDownAfter).
	recent   *window
	lastLoss float64
	lastRTT  time.Duration
}

// window is a ring of a target's last N probe outcomes.
type window struct {
	ok   []bool
	rtt  []time.Duration
	next int
	n    int
	// streak is the target's current run of answered probes.
	streak int
}

func newWindow(size int) *window {
	return &window{ok: make([]bool, size), rtt: make([]time.Duration, size)}
}

func (w *window) add(ok bool, rtt time.Duration) {
	w.ok[w.next], w.rtt[w.next] = ok, rtt
	w.next = (w.next + 1) % len(w.ok)
	if w.n < len(w.ok) {
		w.n++
	}
}

// trailingLosses counts the newest run of losses.
func (w *window) trailingLosses() int {
	k := 0
	for k < w.n {
		i := (w.next - 1 - k + 2*len(w.ok)) % len(w.ok)
		if w.ok[i] {
			break
		}
		k++
	}
	return k
}

// dropTrailingLosses forgets the newest run of losses.
func (w *window) dropTrailingLosses() {
	k := w.trailingLosses()
	w.next = (w.next - k + len(w.ok)) % len(w.ok)
	w.n -= k
}

// slot maps the i-th oldest of the n results in the window to its index in
// the ring (results are the n slots before next).
func (w *window) slot(i int) int {
	return (w.next - w.n + i + 2*len(w.ok)) % len(w.ok)
}

func (w *window) answered() int {
	n := 0
	for i := 0; i < w.n; i++ {
		if w.ok[w.slot(i)] {
			n++
		}
	}
	return n
}

// New returns an empty state; it does nothing until a ConfigLoaded event.
func New() *State { return &State{} }

// Apply feeds one event through the reducer.
func (s *State) Apply(e Event) Decision {
	var d Decision
	switch p := e.Data.(type) {
	case ConfigLoaded:
		s.loadConfig(p.Config, e.Time)
	case LinkChange:
		s.applyLink(p)
	case CarrierChange:
		for _, l := range s.links {
			if l.name == p.Name {
				l.carrier = p.Carrier
			}
		}
	case AddrChange:
		if l := s.links[p.Index]; l != nil && p.Prefix.Addr().Is4() {
			if p.Deleted {
				l.addrs = slices.DeleteFunc(l.addrs, func(a netip.Prefix) bool { return a == p.Prefix })
			} else if !slices.Contains(l.addrs, p.Prefix) {
				l.addrs = append(l.addrs, p.Prefix)
			}
		}
	case RouteChange:
		s.applyRoute(p, &d)
	case RuleChange:
		if p.Deleted && s.ownsRulePriority(p.Priority) {
			d.Intents = append(d.Intents, Reconcile{Reason: fmt.Sprintf("rule %d removed", p.Priority)})
		}
	case ProbeResult:
		if w := s.wanByName(e.WAN); w != nil {
			w.applyProbe(p)
		}
	case LeaseChange:
		if w := s.wanByName(e.WAN); w != nil {
			switch p.Kind {
			case "bound", "renewed":
				l := p
				w.lease = &l
			case "expired", "nak", "released":
				w.lease = nil
			}
		}
	case WifiChange:
		w := s.wanByName(e.WAN)
		if w == nil {
			w = s.wanByIfname(p.Name)
		}
		if w != nil {
			w.applyWifi(p)
		}
	case Synced:
		s.synced = true
	}
	s.attachLinks()
	if !s.haveConfig || !s.synced {
		return d
	}
	s.evaluate(e.Time, &d)
	return d
}

func (s *State) loadConfig(c config.Config, now time.Time) {
	old := s.wans
	s.cfg = c
	s.haveConfig = true
	s.wans = make([]*wanState, 0, len(c.WANs))
	for i, wc := range c.WANs {
		var w *wanState
		for _, o := range old {
			// Keep what we know about a WAN that stays on the same
			// interface: its link, addresses and probe history are
			// still true after a reload.
			if o.cfg.Name == wc.Name && o.cfg.Interface == wc.Interface {
				w = o
				break
			}
		}
		if w == nil {
			w = &wanState{health: Unknown, since: now, reason: "starting"}
		}
		w.cfg = wc
		w.mark = Mark(c.Routing.MarkMask, i)
		w.downAfter = wc.Probe.DownAfter
		if w.downAfter <= 0 {
			w.downAfter = config.DefaultDownAfter(len(wc.Probe.Targets), wc.Probe.Interval)
		}
		if w.targets == nil {
			w.targets = map[netip.Addr]*window{}
			w.recent = newWindow(recentSize)
		}
		size := wc.Probe.Window
		if size <= 0 {
			size = config.DefaultWindow
		}
		for t, win := range w.targets {
			if !slices.Contains(wc.Probe.Targets, t) || len(win.ok) != size {
				delete(w.targets, t)
			}
		}
		for _, t := range wc.Probe.Targets {
			if w.targets[t] == nil {
				w.targets[t] = newWindow(size)
			}
		}
		s.wans = append(s.wans, w)
	}
}

// Mark is the fwmark of the i-th WAN (0-based) within mask: i+1 shifted to
// the mask's lowest set bit, so marks never leave the bits the user gave us.
func Mark(mask uint32, i int) uint32 {
	if mask == 0 {
		return 0
	}
	shift := 0
	for mask&(1<<shift) == 0 {
		shift++
	}
	return (uint32(i+1) << shift) & mask
}

func (s *State) wanByName(name string) *wanState {
	for _, w := range s.wans {
		if w.cfg.Name == name {
			return w
		}
	}
	return nil
}

func (s *State) wanByIfname(name string) *wanState {
	if name == "" {
		return nil
	}
	for _, w := range s.wans {
		if w.cfg.Interface == name {
			return w
		}
	}
	return nil
}

func (s *State) applyLink(l LinkChange) {
	if s.links == nil {
		s.links = map[int]*linkInfo{}
	}
	if l.Deleted {
		delete(s.links, l.Index)
		return
	}
	li := s.links[l.Index]
	if li == nil {
		li = &linkInfo{}
		s.links[l.Index] = li
	}
	li.name, li.adminUp, li.carrier, li.operUp = l.Name, l.AdminUp, l.Carrier, l.OperUp
}

// attachLinks points every WAN at the interface currently bearing its name
// (interfaces come, go and get renamed: a USB stick replugged gets a new index).
func (s *State) attachLinks() {
	for _, w := range s.wans {
		if w.link != nil && w.link.name == w.cfg.Interface && s.links[w.index] == w.link {
			continue
		}
		w.link, w.index = nil, 0
		for i, l := range s.links {
			if l.name == w.cfg.Interface {
				w.link, w.index = l, i
				break
			}
		}
	}
}

func (w *wanState) applyWifi(p WifiChange) {
	w.wifiSeen = true
	switch p.Kind {
	case "connected", "roamed":
		w.wifiConnected = true
	case "disconnected":
		w.wifiConnected = false
	}
	if p.Signal != 0 {
		w.signal = p.Signal
	}
}

func (s *State) applyRoute(r RouteChange, d *Decision) {
	if l := s.links[r.Index]; l != nil && r.Table == mainTable && r.Dst.Bits() == 0 && !r.Deleted && r.Gateway.Is4() {
		// A deleted default route does not forget the gateway: another
		// tool moving its route does not make the gateway wrong, and
		// forgetting it would take the WAN down for nothing.
		l.defaultGW = r.Gateway
	}
	if r.Deleted && r.Protocol == RouteProtocol && s.stillWanted(r) {
		d.Intents = append(d.Intents, Reconcile{Reason: fmt.Sprintf("route %s in table %d removed", r.Dst, r.Table)})
	}
}

// stillWanted reports whether a removed route of ours went through an
// interface that the desired routing still uses in that table: then someone
// else deleted it and it must come back now. A route we replaced ourselves
// (failover repoints the active table) goes through an interface that is no
// longer wanted there and needs no repair pass.
func (s *State) stillWanted(r RouteChange) bool {
	if !s.haveConfig {
		return false
	}
	if r.Table == s.cfg.Routing.ActiveTable {
		for _, m := range s.active {
			if w := s.wanByName(m.WAN); w != nil && (r.Index == 0 || w.index == r.Index) {
				return true
			}
		}
		return false
	}
	for _, w := range s.wans {
		if w.cfg.Table == r.Table {
			return w.linkUsable() && (r.Index == 0 || w.index == r.Index)
		}
	}
	return false
}

// RouteProtocol marks every rule and route wanreact installs ("proto 87"), so
// that a restarted daemon recognises and adopts them and never touches
// anybody else's.
const RouteProtocol = 87

// RulePriorities is the size of the block of rule priorities the daemon uses,
// starting at Routing.RulePriority.
const RulePriorities = config.RulePriorityBlock

func (s *State) ownsRulePriority(p int) bool {
	base := s.cfg.Routing.RulePriority
	return s.haveConfig && p >= base && p < base+RulePriorities
}

// linkUsable is true when packets can leave through the interface at all.
func (w *wanState) linkUsable() bool {
	if w.link == nil || !w.link.adminUp || !w.link.carrier {
		return false
	}
	if w.wifiSeen && !w.wifiConnected {
		return false
	}
	return true
}

func (w *wanState) applyProbe(p ProbeResult) {
	if !w.linkUsable() {
		// Results while the link is known to be unusable say nothing
		// new and would poison the loss window after recovery.
		return
	}
	win := w.targets[p.Target]
	if win != nil && (w.health == Up || w.health == Degraded) {
		// Windows measure the quality of a working WAN. While it is
		// down or not yet proven (link just back, ARP resolving) they
		// keep the history from before: the outage's own losses would
		// keep a recovered WAN degraded for a whole window.
		win.add(p.OK, p.RTT)
		w.recent.add(p.OK, p.RTT)
	}
	if win != nil {
		if p.OK {
			win.streak++
		} else {
			win.streak = 0
		}
	}
	if p.OK {
		w.consecLost = 0
	} else {
		w.consecLost++
	}
	// Proof of life sums the targets' current runs of replies: a target
	// that never answers (broken itself) adds nothing but does not wipe
	// out what the others prove.
	w.consecOK = 0
	for _, t := range w.targets {
		w.consecOK += t.streak
	}
}

// address is the WAN's effective IPv4 address.
func (w *wanState) address() netip.Prefix {
	switch w.cfg.Addressing {
	case config.Static:
		return w.cfg.Address
	case config.DHCP:
		if w.lease != nil {
			return w.lease.Prefix
		}
		return netip.Prefix{}
	}
	if w.link != nil {
		for _, a := range w.link.addrs {
			if a.Addr().Is4() {
				return a
			}
		}
	}
	return netip.Prefix{}
}

func (w *wanState) gateway() netip.Addr {
	switch w.cfg.Addressing {
	case config.Static:
		return w.cfg.Gateway
	case config.DHCP:
		if w.lease != nil && w.lease.Gateway.IsValid() {
			return w.lease.Gateway
		}
		return w.cfg.Gateway
	}
	if w.cfg.Gateway.IsValid() || w.link == nil {
		return w.cfg.Gateway
	}
	return w.link.defaultGW
}

// deadTarget reports whether a target answered none of its (sufficient)
// window while another target of the WAN answered something.
func (w *wanState) deadTarget(win *window) bool {
	if win.n < minSamplesForLoss || win.answered() > 0 {
		return false
	}
	for _, o := range w.targets {
		if o != win && o.answered() > 0 {
			return true
		}
	}
	return false
}

// lossAndRTT pools the windows of the WAN's live targets: pooling keeps the
// estimate steady (a 2-target WAN judges 100 samples, not 50), and leaving out
// dead targets means one unreachable target does not degrade a good WAN.
func (w *wanState) lossAndRTT() (loss float64, rtt time.Duration, ok bool) {
	var n, lost, answered int
	var sum time.Duration
	for _, t := range w.cfg.Probe.Targets {
		win := w.targets[t]
		if win == nil || w.deadTarget(win) {
			continue
		}
		// The current run of losses is left out: a sustained outage is
		// the down rule's business (it has its own threshold), while
		// degraded means losses among replies.
		tail := win.trailingLosses()
		for i := 0; i < win.n; i++ {
			if j := win.slot(i); win.ok[j] {
				answered++
				sum += win.rtt[j]
			} else {
				lost++
			}
		}
		lost -= tail
		n += win.n - tail
	}
	if n < minSamplesForLoss {
		return 0, 0, false
	}
	if answered > 0 {
		rtt = sum / time.Duration(answered)
	}
	return float64(lost) / float64(n), rtt, true
}

// quality decides between up and degraded for a WAN that answers probes, with
// hysteresis: entering degraded needs the enter thresholds, leaving it the
// (stricter) recovery thresholds.
func (w *wanState) quality(current Health) (Health, string) {
	pc := w.cfg.Probe
	loss, rtt, ok := w.lossAndRTT()
	if ok {
		w.lastLoss, w.lastRTT = loss, rtt
	}
	minSignal := 0
	hyst := config.DefaultHysteresis
	if w.cfg.Wifi != nil {
		minSignal = w.cfg.Wifi.MinSignal
		if w.cfg.Wifi.Hysteresis > 0 {
			hyst = w.cfg.Wifi.Hysteresis
		}
	}
	weak := minSignal != 0 && w.signal != 0
	if current == Degraded {
		switch {
		case ok && loss*100 >= pc.RecoverLoss:
			return Degraded, fmt.Sprintf("loss %.0f%% not yet below %.0f%%", loss*100, pc.RecoverLoss)
		case ok && pc.DegradedRTT > 0 && rtt*10 >= pc.DegradedRTT*8:
			return Degraded, fmt.Sprintf("rtt %v not yet below 80%% of %v", rtt.Round(time.Millisecond), pc.DegradedRTT)
		case weak && w.signal < minSignal+hyst:
			return Degraded, fmt.Sprintf("signal %d dBm not yet above %d dBm", w.signal, minSignal+hyst)
		}
		return Up, "recovered"
	}
	switch {
	case ok && loss*100 >= pc.DegradedLoss:
		return Degraded, fmt.Sprintf("loss %.0f%% >= %.0f%%", loss*100, pc.DegradedLoss)
	case ok && pc.DegradedRTT > 0 && rtt > pc.DegradedRTT:
		return Degraded, fmt.Sprintf("rtt %v > %v", rtt.Round(time.Millisecond), pc.DegradedRTT)
	case weak && w.signal < minSignal:
		return Degraded, fmt.Sprintf("signal %d dBm < %d dBm", w.signal, minSignal)
	}
	return Up, "probes answered"
}

// nextHealth is the health rule (docs/health.md explains it for users). It
// returns the new health, why, and whether a Down verdict comes from probes
// (as opposed to the link), which decides how the WAN may come back.
func (w *wanState) nextHealth() (Health, string, bool) {
	switch {
	case w.link == nil:
		return Down, "interface absent", false
	case !w.link.adminUp:
		return Down, "interface administratively down", false
	case !w.link.carrier:
		return Down, "carrier lost", false
	case w.wifiSeen && !w.wifiConnected:
		return Down, "wifi disconnected", false
	case !w.address().IsValid():
		return Down, "no address", false
	}
	lostTooMany := w.consecLost >= w.effectiveDownAfter()
	switch w.health {
	case Up, Degraded:
		if lostTooMany {
			return Down, fmt.Sprintf("%d consecutive probes lost", w.consecLost), true
		}
		h, why := w.quality(w.health)
		return h, why, false
	case Down:
		if !w.downByProbes {
			// The link (or address) just came back: not proven yet.
			return Unknown, "link back, waiting for probes", false
		}
	}
	// Unknown, or Down by probes: probes must prove the WAN first.
	if w.consecOK >= w.upAfter() {
		h, why := w.quality(Unknown)
		if h == Up {
			why = fmt.Sprintf("%d consecutive probes answered", w.consecOK)
		}
		return h, why, false
	}
	if w.health == Unknown && w.judged {
		// The link just came back: ARP and the link itself settle
		// first, so an unproven WAN gets twice the loss budget
		// before it is called down (it carries no traffic meanwhile).
		lostTooMany = w.consecLost >= 2*w.effectiveDownAfter()
	}
	if lostTooMany {
		return Down, fmt.Sprintf("%d consecutive probes lost", w.consecLost), true
	}
	return w.health, w.reason, w.downByProbes
}

// effectiveDownAfter raises down_after on a WAN that is already lossy: at
// loss rate L, k consecutive losses happen by chance with probability L^k,
// so k grows until that is below 1e-6 (30% loss: 12 instead of 8). Without
// it a degraded-but-working WAN would now and then be declared dead.
func (w *wanState) effectiveDownAfter() int {
	// The loss rate among replies, without the current run of losses
	// (which would raise the bar as a real outage goes on): the larger of
	// the long windows' rate and that of the last recentSize probes, which
	// reacts within seconds when loss sets in, before the long windows do.
	loss, _, ok := w.lossAndRTT()
	if !ok {
		loss = 0
	}
	if w.recent.n-w.recent.trailingLosses() >= minSamplesForLoss/2 {
		tail := w.recent.trailingLosses()
		lost := w.recent.n - w.recent.answered() - tail
		loss = max(loss, float64(lost)/float64(w.recent.n-tail))
	}
	return downAfterFor(w.downAfter, loss)
}

// downAfterFor raises k until k losses in a row at loss rate `loss` are a
// one-in-a-million event, within [k, 4k].
func downAfterFor(k int, loss float64) int {
	if loss <= 0 {
		return k
	}
	if loss >= 0.9 {
		return 4 * k
	}
	need := int(math.Ceil(math.Log(1e-6) / math.Log(loss)))
	return min(max(k, need), 4*k)
}

func (w *wanState) upAfter() int {
	if w.cfg.Probe.UpAfter > 0 {
		return w.cfg.Probe.UpAfter
	}
	return config.DefaultUpAfter
}

// class ranks WANs for the active set: lower is better; -1 cannot carry
// traffic at all.
func (w *wanState) class() int {
	if !w.linkUsable() || !w.address().IsValid() {
		return -1
	}
	switch w.health {
	case Up:
		return 0
	case Degraded:
		return 1
	case Unknown:
		if !w.judged {
			// Never judged since start: presume it works, so that a
			// preferred WAN whose proof arrives a few ms after its
			// backup's is not switched away from and back.
			return 0
		}
		return 2
	default:
		// Probe-down but the link is there: a last resort, better
		// than no default route when every WAN fails its probes
		// (the targets themselves may be what is broken).
		return 3
	}
}

func (s *State) evaluate(now time.Time, d *Decision) {
	for _, w := range s.wans {
		was := w.health
		h, why, byProbes := w.nextHealth()
		w.reason, w.downByProbes = why, byProbes
		if h == was {
			continue
		}
		if h == Unknown || (h == Down && !byProbes) {
			// Proof starts afresh once the link is back: probe
			// results from before the outage say nothing.
			w.consecOK, w.consecLost = 0, 0
			for _, win := range w.targets {
				win.streak = 0
			}
		}
		if h == Down && byProbes {
			// The run of losses that proved the outage is not a
			// measure of the WAN's quality once it is back.
			for _, win := range w.targets {
				win.dropTrailingLosses()
			}
		}
		w.health, w.since, w.judged = h, now, true
		d.Transitions = append(d.Transitions, Transition{WAN: w.cfg.Name, From: was, To: h, Reason: why})
	}

	flushed := map[string]bool{}
	flush := func(w *wanState, reason string) {
		if flushed[w.cfg.Name] {
			return
		}
		flushed[w.cfg.Name] = true
		d.Intents = append(d.Intents, FlushConntrack{
			WAN: w.cfg.Name, Address: w.address(), Mark: w.mark, Mask: s.cfg.Routing.MarkMask, Reason: reason,
		})
	}
	// A WAN that went down takes its connections with it: delete their
	// conntrack entries (its address, its mark) so long-lived flows
	// re-route instead of waiting for a dead uplink.
	for _, tr := range d.Transitions {
		if tr.To == Down {
			if w := s.wanByName(tr.WAN); w != nil {
				flush(w, "down: "+tr.Reason)
			}
		}
	}
	active := s.selectActive()
	if !slices.Equal(active, s.active) {
		for _, m := range s.active {
			if slices.ContainsFunc(active, func(n ActiveMember) bool { return n.WAN == m.WAN }) {
				continue
			}
			w := s.wanByName(m.WAN)
			if w == nil || s.cfg.Routing.Slots > 0 {
				// With balancing, connections are pinned to their
				// WAN by connmark and keep working through it
				// when it merely stops taking new ones.
				continue
			}
			// Without pinning, its NATed flows would follow the new
			// default route with the old source address.
			flush(w, fmt.Sprintf("left the active set (%s)", w.health))
		}
		s.active = active
		d.ActiveChanged = true
		d.Active = slices.Clone(active)
	}

	desired := s.computeDesired()
	if !reflect.DeepEqual(desired, s.desired) {
		s.desired = desired
		d.DesiredChanged = true
	}
}

func (s *State) selectActive() []ActiveMember {
	best, prio := -1, 0
	for _, w := range s.wans {
		c := w.class()
		if c < 0 {
			continue
		}
		if best < 0 || c < best || (c == best && w.cfg.Priority < prio) {
			best, prio = c, w.cfg.Priority
		}
	}
	if best < 0 {
		return nil
	}
	var out []ActiveMember
	for _, w := range s.wans {
		if w.class() == best && w.cfg.Priority == prio {
			out = append(out, ActiveMember{WAN: w.cfg.Name, Weight: w.cfg.Weight})
		}
	}
	return out
}

func (s *State) computeDesired() Desired {
	d := Desired{
		ActiveTable:  s.cfg.Routing.ActiveTable,
		RulePriority: s.cfg.Routing.RulePriority,
		MarkMask:     s.cfg.Routing.MarkMask,
		Active:       slices.Clone(s.active),
		Slots:        assignSlots(s.active, s.cfg.Routing.Slots),
	}
	for _, w := range s.wans {
		r := WANRouting{
			Name:          w.cfg.Name,
			Interface:     w.cfg.Interface,
			Table:         w.cfg.Table,
			Mark:          w.mark,
			Address:       w.address(),
			Gateway:       w.gateway(),
			ManageAddress: w.cfg.Addressing != config.External,
		}
		r.Index = w.index
		r.Ready = w.linkUsable() && r.Address.IsValid()
		if w.lease != nil {
			r.ExtraRoutes = slices.Clone(w.lease.Routes)
		}
		d.WANs = append(d.WANs, r)
	}
	return d
}

// assignSlots gives each active WAN a share of n slots proportional to its
// weight (largest remainder), interleaved so that any prefix of the slots is
// balanced too.
func assignSlots(active []ActiveMember, n int) []string {
	if n <= 0 || len(active) == 0 {
		return nil
	}
	total := 0
	for _, m := range active {
		total += max(m.Weight, 1)
	}
	quota := make([]int, len(active))
	type rem struct{ i, r int }
	var rems []rem
	given := 0
	for i, m := range active {
		w := max(m.Weight, 1)
		quota[i] = n * w / total
		given += quota[i]
		rems = append(rems, rem{i, n * w % total})
	}
	slices.SortStableFunc(rems, func(a, b rem) int { return b.r - a.r })
	for k := 0; given < n; k++ {
		quota[rems[k%len(rems)].i]++
		given++
	}
	// Interleave: at each step pick the member furthest behind its share
	// (smooth weighted round robin), deterministic by config order.
	out := make([]string, 0, n)
	credit := make([]int, len(active))
	for range n {
		best := -1
		for i := range active {
			if quota[i] == 0 {
				continue
			}
			credit[i] += quota[i]
			if best < 0 || credit[i] > credit[best] {
				best = i
			}
		}
		credit[best] -= n
		out = append(out, active[best].WAN)
	}
	return out
}

// LinkUp reports whether the named interface is administratively and
// operationally up with carrier, as far as the events said.
func (s *State) LinkUp(name string) bool {
	for _, l := range s.links {
		if l.name == name {
			return l.adminUp && l.carrier && l.operUp
		}
	}
	return false
}

// Desired returns the routing the kernel should have now.
func (s *State) Desired() Desired { return s.desired }

// Config returns the configuration in force.
func (s *State) Config() config.Config { return s.cfg }

// WANStatus is one WAN's entry in `wanreact status --json`.
type WANStatus struct {
	Name      string    `json:"name"`
	Interface string    `json:"interface"`
	State     Health    `json:"state"`
	Active    bool      `json:"active"`
	Address   string    `json:"address,omitempty"`
	Gateway   string    `json:"gateway,omitempty"`
	Loss      float64   `json:"loss"`
	RTTms     float64   `json:"rtt_ms"`
	Since     time.Time `json:"since"`
	Reason    string    `json:"reason,omitempty"`
	Priority  int       `json:"priority"`
	Weight    int       `json:"weight"`
	Table     int       `json:"table"`
	Carrier   bool      `json:"carrier"`
	Signal    int       `json:"signal_dbm,omitempty"`
}

// Status reports every WAN for the control socket.
func (s *State) Status() []WANStatus {
	out := make([]WANStatus, 0, len(s.wans))
	for _, w := range s.wans {
		st := WANStatus{
			Name: w.cfg.Name, Interface: w.cfg.Interface, State: w.health,
			Active:   slices.ContainsFunc(s.active, func(m ActiveMember) bool { return m.WAN == w.cfg.Name }),
			Loss:     w.lastLoss,
			RTTms:    float64(w.lastRTT.Microseconds()) / 1000,
			Since:    w.since.UTC(),
			Reason:   w.reason,
			Priority: w.cfg.Priority, Weight: w.cfg.Weight, Table: w.cfg.Table,
			Carrier: w.link != nil && w.link.carrier, Signal: w.signal,
		}
		if a := w.address(); a.IsValid() {
			st.Address = a.String()
		}
		if g := w.gateway(); g.IsValid() {
			st.Gateway = g.String()
		}
		out = append(out, st)
	}
	return out
}

// Package wifi is wanreact's nl80211 source: it watches the Wi-Fi WAN
// interfaces through the kernel's nl80211 generic netlink family and turns
// association changes and connection-quality (CQM) notifications into
// reactor.WifiChange events.
//
// It only observes: association is someone else's job (wpa_supplicant,
// iwd, NetworkManager), and no hook in that software is needed, because the
// kernel multicasts every connect, disconnect, deauthentication and CQM
// threshold crossing on nl80211's "mlme" group. The one thing the source
// writes to the kernel is the CQM RSSI threshold (NL80211_CMD_SET_CQM) of a
// WAN with wifi.min_signal, so that the kernel tells us when the signal
// crosses it instead of us polling. Drivers without CQM support are polled
// for station info at Options.PollInterval instead.
//
// Interfaces that are not nl80211 interfaces (wired WANs) and kernels without
// cfg80211 produce no events and are reported once in the log, not as errors.
package wifi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	"github.com/wanreact/wanreact/reactor"
)

// DefaultPollInterval is how often station info is read when Options leaves
// PollInterval at zero: often enough to show a fresh signal in status and to
// notice a weak signal on drivers without CQM within seconds, rarely enough
// to cost nothing.
const DefaultPollInterval = 2 * time.Second

// minPollInterval bounds PollInterval from below: station dumps are cheap but
// not free, and sub-100ms polling would only add load without information.
const minPollInterval = 100 * time.Millisecond

// Interface is one WAN whose interface may be an nl80211 (Wi-Fi) interface.
type Interface struct {
	// WAN is the WAN name put into every event (Event.WAN).
	WAN string
	// Name is the network interface name, e.g. wlan0.
	Name string
	// MinSignal in dBm is the CQM RSSI threshold; 0 disables signal events.
	MinSignal int
	// Hysteresis in dB around MinSignal (negative values count as 0).
	Hysteresis int
}

// Options configures a Source. The zero value is usable.
type Options struct {
	// NetNS is the network namespace whose Wi-Fi interfaces are watched;
	// a value <= 0 means the namespace of the process.
	NetNS netns.NsHandle
	// Now stamps events; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
	// PollInterval is the station-info refresh period (status, and signal
	// events where CQM is unsupported); default DefaultPollInterval.
	PollInterval time.Duration
}

// Status is what the source knows about one WAN's Wi-Fi link.
type Status struct {
	WAN       string `json:"wan"`
	Interface string `json:"interface"`
	Index     int    `json:"index,omitempty"`
	// Wireless is true while the interface exists and is an nl80211
	// interface; a wired or absent interface has only WAN and Interface set.
	Wireless  bool   `json:"wireless"`
	Connected bool   `json:"connected"`
	SSID      string `json:"ssid,omitempty"`
	BSSID     string `json:"bssid,omitempty"`
	Frequency int    `json:"freq_mhz,omitempty"`
	// Signal in dBm (last received frame); 0 means unknown.
	Signal int `json:"signal_dbm,omitempty"`
	// Bitrate is the transmit bitrate in kbit/s.
	Bitrate int `json:"bitrate_kbps,omitempty"`
	// CQM is true when the kernel accepted the RSSI threshold, so signal
	// events are pushed by the driver; Polling is true when the driver
	// refused it and signal events come from polling station info.
	CQM     bool `json:"cqm"`
	Polling bool `json:"polling,omitempty"`
	// SignalLow is true after a "low" signal event until the next "high".
	SignalLow bool `json:"signal_low,omitempty"`
	// Reason is the IEEE 802.11 reason code of the last disconnection.
	Reason int `json:"reason,omitempty"`
	// Since is when Connected last changed; Updated when anything did.
	Since   time.Time `json:"since,omitzero"`
	Updated time.Time `json:"updated,omitzero"`
}

// Source watches nl80211 for a set of interfaces. Create it with New; Run
// may be called once at a time; SetInterfaces and Status may be called from
// any goroutine at any time.
type Source struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	ifaces  []Interface
	status  map[string]Status // by WAN name
	changed chan struct{}     // poked by SetInterfaces, buffered 1

	// noWifiOnce keeps "no Wi-Fi support in kernel" to a single log line
	// however often the daemon restarts Run (e.g. on reload).
	noWifiOnce sync.Once
}

// New returns a Source with no interfaces.
func New(o Options) *Source {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch {
	case o.PollInterval <= 0:
		o.PollInterval = DefaultPollInterval
	case o.PollInterval < minPollInterval:
		o.PollInterval = minPollInterval
	}
	return &Source{
		opts:    o,
		log:     o.Logger.With("source", "wifi"),
		status:  map[string]Status{},
		changed: make(chan struct{}, 1),
	}
}

// SetInterfaces replaces the watched interfaces (typically every WAN with a
// wifi section; a WAN without one may be listed with MinSignal 0 to get
// association events only). A running Run picks the change up at once:
// new interfaces get their current state reported and CQM armed.
func (s *Source) SetInterfaces(ifaces []Interface) {
	cp := make([]Interface, len(ifaces))
	copy(cp, ifaces)
	s.mu.Lock()
	s.ifaces = cp
	// Drop status of WANs no longer watched, so Status never reports a
	// stale link for a WAN that was removed by a reload.
	keep := map[string]bool{}
	for _, i := range cp {
		keep[i.WAN] = true
	}
	for w := range s.status {
		if !keep[w] {
			delete(s.status, w)
		}
	}
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Status returns the Wi-Fi state of a watched WAN; false when the WAN is not
// watched or Run has not looked at it yet.
func (s *Source) Status(wan string) (Status, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.status[wan]
	return st, ok
}

func (s *Source) interfaces() []Interface {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := make([]Interface, len(s.ifaces))
	copy(cp, s.ifaces)
	return cp
}

func (s *Source) publish(st Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, i := range s.ifaces {
		// Only publish WANs still configured: the loop may finish handling
		// an interface just after SetInterfaces removed it.
		if i.WAN == st.WAN && i.Name == st.Interface {
			s.status[st.WAN] = st
			return
		}
	}
}

// Run watches the kernel until ctx is done, calling emit from its own
// goroutine for every event. It returns nil when ctx ends, and also returns
// nil at once (after one info log line) when the kernel has no nl80211 family
// (no cfg80211): such a machine simply has no Wi-Fi events. Other errors
// (no generic netlink, lost socket) are returned wrapped.
func (s *Source) Run(ctx context.Context, emit func(reactor.Event)) error {
	if emit == nil {
		return errors.New("wifi: Run needs an emit function")
	}
	k, err := dialKernel(s.opts.NetNS)
	if errors.Is(err, errNoNL80211) {
		s.noWifiOnce.Do(func() {
			s.log.Info("no Wi-Fi support in kernel: no Wi-Fi events", "detail", err.Error())
		})
		return nil
	}
	if err != nil {
		return fmt.Errorf("wifi: %w", err)
	}
	ticker := time.NewTicker(s.opts.PollInterval)
	defer ticker.Stop()
	return s.run(ctx, k, ticker.C, emit)
}

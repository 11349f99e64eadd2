package wifi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/genetlink/genltest"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/wifi"
	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

// The fakes: nl80211 as seen through genltest connections (multicast
// receive and SET_CQM) plus a querier standing in for mdlayher/wifi.

var testFamily = genetlink.Family{ID: 0x1c, Version: 1, Name: unix.NL80211_GENL_NAME}

// cqmCall is one SET_CQM request as the fake kernel decoded it.
type cqmCall struct {
	ifindex, thold, hyst int
	flags                netlink.HeaderFlags
}

type fakeKernel struct {
	t *testing.T

	mu       sync.Mutex
	ifaces   []*wifi.Interface
	bss      map[int]*wifi.BSS // by ifindex; absent = not associated
	stations map[int][]*wifi.StationInfo
	cqmErrno int // returned to SET_CQM when non-zero
	cqmCalls []cqmCall

	multicast chan []genetlink.Message
	recvErr   chan error
	closed    chan struct{}
	closeOnce sync.Once
}

func newFakeKernel(t *testing.T) *fakeKernel {
	return &fakeKernel{
		t:         t,
		bss:       map[int]*wifi.BSS{},
		stations:  map[int][]*wifi.StationInfo{},
		multicast: make(chan []genetlink.Message),
		recvErr:   make(chan error),
		closed:    make(chan struct{}),
	}
}

// kernel builds the source's kernel handle on top of the fakes.
func (f *fakeKernel) kernel() *kernel {
	ev := genltest.Dial(func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		// An empty request is a Receive call: hand out the next multicast
		// batch, or fail like a closed socket once the source closes it.
		select {
		case msgs := <-f.multicast:
			return msgs, nil
		case err := <-f.recvErr:
			return nil, err
		case <-f.closed:
			return nil, net.ErrClosed
		}
	})
	cmds := genltest.Dial(genltest.CheckRequest(testFamily.ID, unix.NL80211_CMD_SET_CQM, 0,
		func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
			call := cqmCall{flags: nreq.Header.Flags}
			ad, err := netlink.NewAttributeDecoder(greq.Data)
			if err != nil {
				return nil, err
			}
			for ad.Next() {
				switch ad.Type() {
				case unix.NL80211_ATTR_IFINDEX:
					call.ifindex = int(ad.Uint32())
				case unix.NL80211_ATTR_CQM:
					ad.Nested(func(nad *netlink.AttributeDecoder) error {
						for nad.Next() {
							switch nad.Type() {
							case unix.NL80211_ATTR_CQM_RSSI_THOLD:
								call.thold = int(nad.Int32())
							case unix.NL80211_ATTR_CQM_RSSI_HYST:
								call.hyst = int(nad.Uint32())
							}
						}
						return nil
					})
				}
			}
			if err := ad.Err(); err != nil {
				return nil, err
			}
			f.mu.Lock()
			f.cqmCalls = append(f.cqmCalls, call)
			errno := f.cqmErrno
			f.mu.Unlock()
			if errno != 0 {
				return nil, genltest.Error(errno)
			}
			return nil, io.EOF // a bare acknowledgement
		}))
	return &kernel{events: &fakeEvents{Conn: ev, f: f}, cmds: cmds, family: testFamily, query: f}
}

type fakeEvents struct {
	*genetlink.Conn
	f *fakeKernel
}

func (e *fakeEvents) Close() error {
	e.f.closeOnce.Do(func() { close(e.f.closed) })
	return e.Conn.Close()
}

func (f *fakeKernel) Interfaces() ([]*wifi.Interface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*wifi.Interface(nil), f.ifaces...), nil
}

func (f *fakeKernel) BSS(ifi *wifi.Interface) (*wifi.BSS, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.bss[ifi.Index]
	if !ok {
		return nil, os.ErrNotExist
	}
	cp := *b
	return &cp, nil
}

func (f *fakeKernel) StationInfo(ifi *wifi.Interface) ([]*wifi.StationInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*wifi.StationInfo(nil), f.stations[ifi.Index]...), nil
}

func (f *fakeKernel) Close() error { return nil }

// associate makes ifindex associated with bssid at signal dBm.
func (f *fakeKernel) associate(ifindex int, ssid string, bssid net.HardwareAddr, freq, signal int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bss[ifindex] = &wifi.BSS{SSID: ssid, BSSID: bssid, Frequency: freq, Status: wifi.BSSStatusAssociated}
	f.stations[ifindex] = []*wifi.StationInfo{{InterfaceIndex: ifindex, HardwareAddr: bssid, Signal: signal, TransmitBitrate: 54_000_000}}
}

func (f *fakeKernel) disassociate(ifindex int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.bss, ifindex)
	delete(f.stations, ifindex)
}

func (f *fakeKernel) setSignal(ifindex, signal int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.stations[ifindex] {
		s.Signal = signal
	}
}

func (f *fakeKernel) calls() []cqmCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]cqmCall(nil), f.cqmCalls...)
}

// send delivers one multicast batch; it blocks until the source reads it.
func (f *fakeKernel) send(msgs ...genetlink.Message) {
	f.t.Helper()
	select {
	case f.multicast <- msgs:
	case <-time.After(5 * time.Second):
		f.t.Fatal("the source did not read a multicast message within 5s")
	}
}

// msg builds an nl80211 multicast message.
func msg(cmd uint8, enc func(ae *netlink.AttributeEncoder)) genetlink.Message {
	ae := netlink.NewAttributeEncoder()
	enc(ae)
	b, err := ae.Encode()
	if err != nil {
		panic(err)
	}
	return genetlink.Message{Header: genetlink.Header{Command: cmd, Version: 1}, Data: b}
}

func cqmMsg(ifindex int, enc func(ae *netlink.AttributeEncoder)) genetlink.Message {
	return msg(unix.NL80211_CMD_NOTIFY_CQM, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NL80211_ATTR_IFINDEX, uint32(ifindex))
		ae.Nested(unix.NL80211_ATTR_CQM, func(nae *netlink.AttributeEncoder) error {
			enc(nae)
			return nil
		})
	})
}

func beaconLossMsg(ifindex int) genetlink.Message {
	return cqmMsg(ifindex, func(ae *netlink.AttributeEncoder) { ae.Flag(unix.NL80211_ATTR_CQM_BEACON_LOSS_EVENT, true) })
}

// deauthFrame builds an 802.11 deauthentication frame.
func deauthFrame(sa, bssid net.HardwareAddr, reason uint16) []byte {
	b := make([]byte, 26)
	b[0] = 0xc0 // management, subtype deauthentication
	copy(b[4:10], net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[10:16], sa)
	copy(b[16:22], bssid)
	b[24], b[25] = byte(reason), byte(reason>>8)
	return b
}

// harness runs a Source's loop on a fake kernel and collects its events.
type harness struct {
	t      *testing.T
	f      *fakeKernel
	s      *Source
	events chan reactor.Event
	ticks  chan time.Time
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

var testEpoch = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func startHarness(t *testing.T, f *fakeKernel, ifaces []Interface) *harness {
	t.Helper()
	logs := &syncBuffer{}
	var mu sync.Mutex
	var n int
	s := New(Options{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		// A clock that advances one second per reading, so event times
		// come from Options.Now and are strictly increasing.
		Now: func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			n++
			return testEpoch.Add(time.Duration(n) * time.Second)
		},
	})
	s.SetInterfaces(ifaces)
	h := &harness{t: t, f: f, s: s, events: make(chan reactor.Event, 100), ticks: make(chan time.Time), logs: logs, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- s.run(ctx, f.kernel(), h.ticks, func(e reactor.Event) { h.events <- e }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(5 * time.Second):
			t.Error("run did not return within 5s of cancel")
		}
	})
	return h
}

// next returns the next event, failing the test after 5s.
func (h *harness) next() reactor.Event {
	h.t.Helper()
	select {
	case e := <-h.events:
		return e
	case <-time.After(5 * time.Second):
		h.t.Fatal("no event within 5s")
		return reactor.Event{}
	}
}

// nextWifi returns the next event, which must be a WifiChange of kind.
func (h *harness) nextWifi(kind string) reactor.WifiChange {
	h.t.Helper()
	e := h.next()
	w, ok := e.Data.(reactor.WifiChange)
	if !ok || w.Kind != kind {
		h.t.Fatalf("event %+v, want a wifi %q event", e, kind)
	}
	if e.Time.Before(testEpoch) {
		h.t.Errorf("event time %v does not come from Options.Now", e.Time)
	}
	return w
}

// barrier proves that everything sent before it produced no event: the
// loop handles messages in order, so the beacon-loss event it triggers must
// be the very next one.
func (h *harness) barrier(ifindex int) {
	h.t.Helper()
	h.f.send(beaconLossMsg(ifindex))
	h.nextWifi("beacon_loss")
}

func (h *harness) tick() {
	h.t.Helper()
	select {
	case h.ticks <- time.Now():
	case <-time.After(5 * time.Second):
		h.t.Fatal("the source did not take a poll tick within 5s")
	}
}

// waitStatus polls Status until cond holds (the loop publishes after it
// emits, so a status change may trail the event by a moment).
func (h *harness) waitStatus(wan string, cond func(Status, bool) bool) Status {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, ok := h.s.Status(wan)
		if cond(st, ok) {
			return st
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("status of %q never satisfied the condition; last %+v (%v)", wan, st, ok)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitCalls waits until the fake kernel has seen n SET_CQM requests.
func (h *harness) waitCalls(n int) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(h.f.calls()) < n {
		if time.Now().After(deadline) {
			h.t.Fatalf("SET_CQM calls = %+v, want %d", h.f.calls(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (b *syncBuffer) count(sub string) int { return strings.Count(b.String(), sub) }

var errBoom = errors.New("boom")

// Package carrier polls the carrier bit of WAN interfaces.
//
// Why poll when netlink reports carrier changes? The kernel sends those
// notifications from its linkwatch worker, which handles events of ordinary
// NICs (not stacked devices) at most once per second machine-wide: a carrier
// loss that follows any other link event within a second is reported up to a
// second late. /sys/class/net/IF/carrier reads the driver's bit directly, so
// a cheap poll (one pread per interface every 20ms, one wake-up for all of
// them) sees a pulled cable within 20ms. Netlink stays the source of truth
// for everything else; this only makes carrier loss (and return) fast.
package carrier

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/wanreact/wanreact/reactor"
)

// DefaultInterval is the poll period: fast enough for the 50ms carrier-loss
// target, slow enough that its wake-ups stay a small part of the daemon's
// idle cost (each costs ~0.1ms of CPU on a small VM).
const DefaultInterval = 20 * time.Millisecond

// reopenEvery is how often a missing interface's file is looked for again.
const reopenEvery = time.Second

// Options configures a Poller.
type Options struct {
	Interval time.Duration
	Now      func() time.Time
	// SysfsNet is the directory with one entry per interface
	// (default /sys/class/net).
	SysfsNet string
	Logger   *slog.Logger
}

// Poller emits reactor.CarrierChange when an interface's carrier changes.
type Poller struct {
	o     Options
	mu    sync.Mutex
	names []string
	// wake is signalled by SetInterfaces.
	wake chan struct{}
}

// New returns a poller with no interfaces.
func New(o Options) *Poller {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SysfsNet == "" {
		o.SysfsNet = "/sys/class/net"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Poller{o: o, wake: make(chan struct{}, 1)}
}

// SetInterfaces replaces the polled interfaces.
func (p *Poller) SetInterfaces(names []string) {
	p.mu.Lock()
	p.names = append([]string(nil), names...)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

type watched struct {
	f        *os.File
	lastOpen time.Time
	known    bool
	carrier  bool
}

// Run polls until ctx is done.
func (p *Poller) Run(ctx context.Context, emit func(reactor.Event)) error {
	state := map[string]*watched{}
	defer func() {
		for _, w := range state {
			if w.f != nil {
				w.f.Close()
			}
		}
	}()
	t := time.NewTicker(p.o.Interval)
	defer t.Stop()
	buf := make([]byte, 8)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.wake:
			p.mu.Lock()
			names := p.names
			p.mu.Unlock()
			keep := map[string]bool{}
			for _, n := range names {
				keep[n] = true
				if state[n] == nil {
					state[n] = &watched{}
				}
			}
			for n, w := range state {
				if !keep[n] {
					if w.f != nil {
						w.f.Close()
					}
					delete(state, n)
				}
			}
		case <-t.C:
		}
		for name, w := range state {
			carrier, ok := p.read(name, w, buf)
			if !ok {
				continue
			}
			if w.known && carrier == w.carrier {
				continue
			}
			first := !w.known
			w.known, w.carrier = true, carrier
			if first {
				// Netlink reports the initial state; only changes
				// seen here first are worth an event.
				continue
			}
			emit(reactor.Event{Time: p.o.Now(), Data: reactor.CarrierChange{Name: name, Carrier: carrier}})
		}
	}
}

// read returns the carrier bit, or ok=false when the interface is absent.
func (p *Poller) read(name string, w *watched, buf []byte) (carrier, ok bool) {
	if w.f == nil {
		now := time.Now()
		if now.Sub(w.lastOpen) < reopenEvery {
			return false, false
		}
		w.lastOpen = now
		f, err := os.Open(filepath.Join(p.o.SysfsNet, name, "carrier"))
		if err != nil {
			w.known = false
			return false, false
		}
		w.f = f
	}
	n, err := w.f.ReadAt(buf, 0)
	switch {
	case n > 0:
		return buf[0] == '1', true
	case errors.Is(err, syscall.EINVAL):
		// An administratively down interface has no carrier to read.
		return false, true
	default:
		// The interface went away (ENODEV) or was replaced: reopen.
		w.f.Close()
		w.f, w.known = nil, false
		return false, false
	}
}

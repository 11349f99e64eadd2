// Package metrics serves wanreact's Prometheus metrics (/metrics) and a
// health summary (/health.json) on metrics_listen.
//
// The text exposition format is written directly rather than through
// client_golang: on the routers wanreact targets, client_golang (with the
// protobuf runtime it pulls in) costs about 2.7 MB of binary and 2.6 MB of
// resident memory, more than the rest of the daemon's metrics-related code by
// two orders of magnitude. The format is small, stable and checked in the
// tests with Prometheus' own parser (prometheus/common/expfmt).
//
// Counters are updated by Observe on the reactor goroutine (a mutex held for
// a map increment, never anything slower); per-WAN gauges are read at scrape
// time from a status snapshot taken through the reactor goroutine, so a
// scrape also proves the reactor loop answers.
package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/wanreact/wanreact/reactor"
)

// Options configures Metrics.
type Options struct {
	// Snapshot returns every WAN's status through the reactor goroutine;
	// an error means the reactor did not answer in time.
	Snapshot func(ctx context.Context) ([]reactor.WANStatus, error)
	Version  string
	// Now defaults to time.Now (the DHCP lease's remaining time).
	Now func() time.Time
	// SnapshotTimeout bounds the wait for the reactor. Default 2s.
	SnapshotTimeout time.Duration
}

// Metrics collects counters from the daemon and renders them with the
// current status. Its methods are safe for concurrent use.
type Metrics struct {
	o Options

	mu            sync.Mutex
	events        map[string]uint64    // by source
	probes        map[[2]string]uint64 // wan, result (reply, lost)
	transitions   map[[2]string]uint64 // wan, to
	actions       map[[2]string]uint64 // kind, result (ok, error)
	actionChanges map[string]uint64    // kind
	actionSecs    map[string]float64   // kind: duration sum
	hooks         map[[2]string]uint64 // event, result
	leaseExpiry   map[string]time.Time // wan
	activeChanges uint64
	failovers     uint64
	lastActive    map[string]bool
	wans          map[string]bool // configured WANs, to prune counters on reload
}

// New returns an empty Metrics.
func New(o Options) *Metrics {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SnapshotTimeout <= 0 {
		o.SnapshotTimeout = 2 * time.Second
	}
	return &Metrics{
		o: o, events: map[string]uint64{}, probes: map[[2]string]uint64{}, transitions: map[[2]string]uint64{},
		actions: map[[2]string]uint64{}, actionChanges: map[string]uint64{}, actionSecs: map[string]float64{},
		hooks: map[[2]string]uint64{}, leaseExpiry: map[string]time.Time{}, lastActive: map[string]bool{},
	}
}

// Observe counts an event and the decision it caused. It runs on the
// reactor goroutine and does no I/O.
func (m *Metrics) Observe(e reactor.Event, d reactor.Decision, _ *reactor.State) {
	if e.Data == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events[e.Data.Source()]++
	switch p := e.Data.(type) {
	case reactor.ProbeResult:
		if e.WAN != "" {
			m.probes[[2]string{e.WAN, p.Type()}]++
		}
	case reactor.LeaseChange:
		switch p.Kind {
		case "bound", "renewed":
			if !p.Expiry.IsZero() {
				m.leaseExpiry[e.WAN] = p.Expiry
			}
		default: // expired, nak, released: no lease any more
			delete(m.leaseExpiry, e.WAN)
		}
	case reactor.ConfigLoaded:
		m.wans = map[string]bool{}
		for _, w := range p.Config.WANs {
			m.wans[w.Name] = true
		}
		m.prune()
	}
	for _, t := range d.Transitions {
		m.transitions[[2]string{t.WAN, string(t.To)}]++
	}
	if d.ActiveChanged {
		m.activeChanges++
		now := map[string]bool{}
		for _, a := range d.Active {
			now[a.WAN] = true
		}
		for w := range m.lastActive {
			if !now[w] {
				// A WAN left the active set: traffic moved off it.
				m.failovers++
				break
			}
		}
		m.lastActive = now
	}
}

// prune forgets the series of WANs a reload removed.
func (m *Metrics) prune() {
	for k := range m.probes {
		if !m.wans[k[0]] {
			delete(m.probes, k)
		}
	}
	for k := range m.transitions {
		if !m.wans[k[0]] {
			delete(m.transitions, k)
		}
	}
	for w := range m.leaseExpiry {
		if !m.wans[w] {
			delete(m.leaseExpiry, w)
		}
	}
}

// ObserveAction counts a kernel writer's pass ("routing", "conntrack").
func (m *Metrics) ObserveAction(kind string, changed int, err error, took time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.actions[[2]string{kind, result}]++
	m.actionChanges[kind] += uint64(max(changed, 0))
	m.actionSecs[kind] += took.Seconds()
}

// ObserveHook counts one hook run (result: ok, failed, timeout, dropped).
func (m *Metrics) ObserveHook(event, result string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hooks[[2]string{event, result}]++
}

// Handler serves /metrics, /health.json and a short index at /.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", m.serveMetrics)
	mux.HandleFunc("GET /health.json", m.serveHealth)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "wanreact: /metrics (Prometheus), /health.json")
	})
	return mux
}

// snapshot asks the reactor for the status, timing the round trip.
func (m *Metrics) snapshot(ctx context.Context) ([]reactor.WANStatus, time.Duration, error) {
	if m.o.Snapshot == nil {
		return nil, 0, errors.New("no status source")
	}
	ctx, cancel := context.WithTimeout(ctx, m.o.SnapshotTimeout)
	defer cancel()
	start := time.Now()
	st, err := m.o.Snapshot(ctx)
	return st, time.Since(start), err
}

func (m *Metrics) serveMetrics(w http.ResponseWriter, r *http.Request) {
	st, rtt, err := m.snapshot(r.Context())
	var b []byte
	b = m.appendText(b, st, rtt, err == nil)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(b)
}

// Health is the body of /health.json.
type Health struct {
	// Status is "ok" (every WAN up), "degraded" (traffic flows, but some
	// WAN is not up) or "down" (no WAN carries traffic, or the reactor
	// does not answer). The HTTP status is 200 unless Status is "down".
	Status  string              `json:"status"`
	Reactor bool                `json:"reactor"`
	Version string              `json:"version"`
	Active  []string            `json:"active"`
	WANs    []reactor.WANStatus `json:"wans"`
	Error   string              `json:"error,omitempty"`
}

// HealthOf summarises a status snapshot.
func HealthOf(st []reactor.WANStatus, err error, version string) Health {
	h := Health{Status: "down", Reactor: err == nil, Version: version, Active: []string{}, WANs: st}
	if err != nil {
		h.Error = "reactor did not answer: " + err.Error()
		return h
	}
	if h.WANs == nil {
		h.WANs = []reactor.WANStatus{}
	}
	allUp := true
	for _, w := range st {
		if w.Active {
			h.Active = append(h.Active, w.Name)
		}
		if w.State != reactor.Up {
			allUp = false
		}
	}
	switch {
	case len(h.Active) == 0:
		h.Status = "down"
	case allUp:
		h.Status = "ok"
	default:
		h.Status = "degraded"
	}
	return h
}

func (m *Metrics) serveHealth(w http.ResponseWriter, r *http.Request) {
	st, _, err := m.snapshot(r.Context())
	h := HealthOf(st, err, m.o.Version)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if h.Status == "down" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(h)
}

// retryListen is how long Serve waits before retrying a port that could
// not be bound (another process had it, or the address is not up yet).
const retryListen = 10 * time.Second

// Serve listens on addr and serves h until ctx is done. A failure to listen
// is logged and retried: metrics must never keep the daemon from routing.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	for {
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err == nil {
			log.Info("metrics listening", "addr", ln.Addr().String())
			err = srv.Serve(ln)
			if errors.Is(err, http.ErrServerClosed) || ctx.Err() != nil {
				return nil
			}
		}
		log.Error("metrics: cannot serve; retrying", "addr", addr, "err", err, "retry_in", retryListen)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retryListen):
		}
	}
}

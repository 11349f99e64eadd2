package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/wanreact/wanreact/config"
	"github.com/wanreact/wanreact/reactor"
)

var now = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func statuses() []reactor.WANStatus {
	return []reactor.WANStatus{
		{Name: "isp1", Interface: "wan0", State: reactor.Down, Loss: 1, Since: now.Add(-time.Minute)},
		{Name: "isp2", Interface: `we"ird\`, State: reactor.Up, Active: true, Carrier: true, Loss: 0.02, RTTms: 12.5, Since: now.Add(-time.Hour)},
		{Name: "wifi1", Interface: "wlan0", State: reactor.Degraded, Signal: -78, Since: now},
	}
}

func feed(m *Metrics) {
	ev := func(wan string, p reactor.Payload) reactor.Event { return reactor.Event{Time: now, WAN: wan, Data: p} }
	m.Observe(ev("", reactor.ConfigLoaded{Config: config.Config{WANs: []config.WAN{{Name: "isp1"}, {Name: "isp2"}, {Name: "wifi1"}}}}), reactor.Decision{}, nil)
	for i := 0; i < 7; i++ {
		m.Observe(ev("isp1", reactor.ProbeResult{OK: i < 5}), reactor.Decision{}, nil)
	}
	m.Observe(ev("isp2", reactor.ProbeResult{OK: true}), reactor.Decision{}, nil)
	m.Observe(ev("wifi1", reactor.LeaseChange{Kind: "bound", Expiry: now.Add(time.Hour)}), reactor.Decision{}, nil)
	m.Observe(ev("isp2", reactor.LeaseChange{Kind: "bound", Expiry: now.Add(time.Hour)}), reactor.Decision{}, nil)
	m.Observe(ev("isp2", reactor.LeaseChange{Kind: "expired"}), reactor.Decision{}, nil)
	up := reactor.Decision{Transitions: []reactor.Transition{{WAN: "isp1", From: reactor.Unknown, To: reactor.Up}},
		ActiveChanged: true, Active: []reactor.ActiveMember{{WAN: "isp1", Weight: 1}}}
	m.Observe(ev("isp1", reactor.ProbeResult{OK: true}), up, nil)
	fail := reactor.Decision{Transitions: []reactor.Transition{{WAN: "isp1", From: reactor.Up, To: reactor.Down}},
		ActiveChanged: true, Active: []reactor.ActiveMember{{WAN: "isp2", Weight: 1}}}
	m.Observe(ev("", reactor.CarrierChange{Name: "wan0"}), fail, nil)
	m.ObserveAction("routing", 3, nil, 2*time.Millisecond)
	m.ObserveAction("routing", 0, nil, time.Millisecond)
	m.ObserveAction("conntrack", 0, errors.New("no ctnetlink"), time.Millisecond)
	m.ObserveHook("down", "timeout")
	m.ObserveHook("down", "timeout")
	m.ObserveHook("active", "ok")
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("Prometheus' parser rejects the exposition: %v", err)
	}
	return fams
}

// value finds the sample of family name whose labels include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no family %s", name)
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if got[want[i]] != want[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Summary != nil:
			return m.Summary.GetSampleSum()
		}
	}
	t.Fatalf("no sample %s%v", name, want)
	return 0
}

func TestMetricsScrapeParses(t *testing.T) {
	m := New(Options{Version: "v1.2.3", Now: func() time.Time { return now },
		Snapshot: func(context.Context) ([]reactor.WANStatus, error) { return statuses(), nil }})
	feed(m)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	fams := scrape(t, srv.URL+"/metrics")

	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"wanreact_build_info", []string{"version", "v1.2.3"}, 1},
		{"wanreact_reactor_up", nil, 1},
		{"wanreact_wan_state", []string{"wan", "isp1", "state", "down"}, 1},
		{"wanreact_wan_state", []string{"wan", "isp1", "state", "up"}, 0},
		{"wanreact_wan_state", []string{"wan", "isp2", "interface", `we"ird\`, "state", "up"}, 1},
		{"wanreact_wan_active", []string{"wan", "isp2"}, 1},
		{"wanreact_wan_active", []string{"wan", "isp1"}, 0},
		{"wanreact_wan_rtt_seconds", []string{"wan", "isp2"}, 0.0125},
		{"wanreact_wan_loss_ratio", []string{"wan", "isp2"}, 0.02},
		{"wanreact_wan_carrier", []string{"wan", "isp2"}, 1},
		{"wanreact_wan_state_since_seconds", []string{"wan", "isp1"}, float64(now.Add(-time.Minute).Unix())},
		{"wanreact_wifi_signal_dbm", []string{"wan", "wifi1"}, -78},
		{"wanreact_probes_total", []string{"wan", "isp1", "result", "reply"}, 6},
		{"wanreact_probes_total", []string{"wan", "isp1", "result", "lost"}, 2},
		{"wanreact_events_total", []string{"source", "probe"}, 9},
		{"wanreact_events_total", []string{"source", "dhcp"}, 3},
		{"wanreact_wan_transitions_total", []string{"wan", "isp1", "state", "down"}, 1},
		{"wanreact_active_changes_total", nil, 2},
		{"wanreact_failovers_total", nil, 1},
		{"wanreact_dhcp_lease_remaining_seconds", []string{"wan", "wifi1"}, 3600},
		{"wanreact_actions_total", []string{"kind", "routing", "result", "ok"}, 2},
		{"wanreact_actions_total", []string{"kind", "conntrack", "result", "error"}, 1},
		{"wanreact_action_changes_total", []string{"kind", "routing"}, 3},
		{"wanreact_action_duration_seconds", []string{"kind", "routing"}, 0.003},
		{"wanreact_hooks_total", []string{"event", "down", "result", "timeout"}, 2},
	} {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// The lease that expired is gone, not stuck at its last value.
	for _, s := range fams["wanreact_dhcp_lease_remaining_seconds"].Metric {
		if s.Label[0].GetValue() == "isp2" {
			t.Error("expired lease still exported")
		}
	}
	if rss := value(t, fams, "process_resident_memory_bytes"); rss < 1<<20 {
		t.Errorf("RSS %v", rss)
	}
	if g := value(t, fams, "go_goroutines"); g < 1 {
		t.Errorf("goroutines %v", g)
	}
	if fams["wanreact_action_duration_seconds"].GetType() != dto.MetricType_SUMMARY {
		t.Error("action duration is not a summary")
	}
	t.Logf("%d metric families", len(fams))

	// A reload that drops a WAN drops its series.
	m.Observe(reactor.Event{Time: now, Data: reactor.ConfigLoaded{Config: config.Config{WANs: []config.WAN{{Name: "isp2"}}}}}, reactor.Decision{}, nil)
	fams = scrape(t, srv.URL+"/metrics")
	if f := fams["wanreact_probes_total"]; f != nil {
		for _, s := range f.Metric {
			if s.Label[0].GetValue() == "isp1" {
				t.Error("isp1's probe counter survived its removal")
			}
		}
	}
}

// TestReactorDown: a reactor that does not answer shows as
// wanreact_reactor_up 0, no per-WAN series, and /health.json 503.
func TestReactorDown(t *testing.T) {
	m := New(Options{SnapshotTimeout: 50 * time.Millisecond, Snapshot: func(ctx context.Context) ([]reactor.WANStatus, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	fams := scrape(t, srv.URL+"/metrics")
	if v := value(t, fams, "wanreact_reactor_up"); v != 0 {
		t.Errorf("reactor_up = %v", v)
	}
	if _, ok := fams["wanreact_wan_state"]; ok {
		t.Error("per-WAN series without a snapshot")
	}
	h, code := health(t, srv.URL)
	if code != 503 || h.Status != "down" || h.Reactor || !strings.Contains(h.Error, "deadline") {
		t.Errorf("health = %d %+v", code, h)
	}
}

func health(t *testing.T, base string) (Health, int) {
	t.Helper()
	resp, err := http.Get(base + "/health.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h Health
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return h, resp.StatusCode
}

func TestHealth(t *testing.T) {
	st := statuses()
	m := New(Options{Version: "x", Snapshot: func(context.Context) ([]reactor.WANStatus, error) { return st, nil }})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	h, code := health(t, srv.URL)
	if code != 200 || h.Status != "degraded" || len(h.Active) != 1 || h.Active[0] != "isp2" || len(h.WANs) != 3 || h.Version != "x" {
		t.Errorf("some WANs down: %d %+v", code, h)
	}
	for i := range st {
		st[i].State, st[i].Active = reactor.Up, true
	}
	if h, code = health(t, srv.URL); code != 200 || h.Status != "ok" {
		t.Errorf("all up: %d %+v", code, h)
	}
	for i := range st {
		st[i].Active = false
	}
	if h, code = health(t, srv.URL); code != 503 || h.Status != "down" {
		t.Errorf("none active: %d %+v", code, h)
	}
	resp, err := http.Post(srv.URL+"/metrics", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %d", resp.StatusCode)
	}
}

// TestServeRetriesBusyPort: a taken port is retried, not fatal, and the
// server stops with its context.
func TestServeRetriesBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs lockedBuilder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	go func() { done <- Serve(ctx, addr, New(Options{}).Handler(), log) }()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Serve did not stop")
	}
	ln.Close()

	// And a free port serves.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- Serve(ctx, addr, New(Options{Version: "v"}).Handler(), slog.New(slog.DiscardHandler)) }()
	var resp *http.Response
	for i := 0; i < 100; i++ {
		if resp, err = http.Get("http://" + addr + "/metrics"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.Contains(logs.String(), "retrying") {
		t.Errorf("busy port not logged: %s", logs.String())
	}
}

// lockedBuilder is a strings.Builder safe to write from Serve's goroutine.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

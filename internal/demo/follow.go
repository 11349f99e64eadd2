package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wanreact/wanreact/reactor"
)

// logEvent is one line of the daemon's event log, as much of it as the demo
// needs: probe outcomes (for the timeline), decisions and kernel actions.
type logEvent struct {
	Time   time.Time
	Source string
	Type   string
	WAN    string
	// ProbeOK is set for source "probe".
	ProbeOK bool
	// Decision is set for source "reactor", type "decision".
	Decision *reactor.DecisionRecord
	// Deleted is the conntrack entries an "action/conntrack" line removed.
	Deleted int
}

// parseLogLine decodes one event-log line. Lines it does not understand are
// an error, not a panic: the stream comes from another process.
func parseLogLine(line []byte) (logEvent, error) {
	var h struct {
		Time   time.Time       `json:"time"`
		Source string          `json:"source"`
		Type   string          `json:"type"`
		WAN    string          `json:"wan"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(line, &h); err != nil {
		return logEvent{}, fmt.Errorf("event line: %w", err)
	}
	if h.Error != "" {
		return logEvent{}, fmt.Errorf("daemon: %s", h.Error)
	}
	if h.Source == "" || h.Time.IsZero() {
		return logEvent{}, fmt.Errorf("event line without time or source: %.80s", line)
	}
	ev := logEvent{Time: h.Time, Source: h.Source, Type: h.Type, WAN: h.WAN}
	switch {
	case h.Source == "probe":
		ev.ProbeOK = h.Type == "reply"
	case h.Source == "reactor" && h.Type == "decision":
		var r reactor.DecisionRecord
		if err := json.Unmarshal(line, &r); err != nil {
			return logEvent{}, fmt.Errorf("decision line: %w", err)
		}
		ev.Decision = &r
	case h.Source == "action" && h.Type == "conntrack":
		var d struct {
			Deleted int `json:"deleted"`
		}
		_ = json.Unmarshal(h.Data, &d) // a missing count just reads 0
		ev.Deleted = d.Deleted
	}
	return ev, nil
}

// describe renders a decision for the terminal: health transitions and
// active-set changes, the two things an operator watches.
func describe(r *reactor.DecisionRecord) []string {
	var out []string
	for _, t := range r.Transitions {
		out = append(out, fmt.Sprintf("%s %s → %s (%s)", t.WAN, t.From, t.To, t.Reason))
	}
	if r.ActiveChanged {
		out = append(out, "active set: "+activeString(r.Active))
	}
	return out
}

func activeString(a []reactor.ActiveMember) string {
	if len(a) == 0 {
		return "(none: no WAN can carry traffic)"
	}
	names := make([]string, len(a))
	for i, m := range a {
		names[i] = m.WAN
	}
	return strings.Join(names, ", ")
}

// tracker follows the daemon's event log through `wanreact events -f --json`
// (the same stream an operator would tail) and keeps the WANs' health and
// the active set as the decisions report them, so that the script can wait
// for "isp1 is back" without polling.
type tracker struct {
	bin, socket string
	// onEvent is called for every new line, from the follower goroutine.
	onEvent func(logEvent)

	mu      sync.Mutex
	events  []logEvent
	lines   int // lines consumed, to skip the history on a reconnect
	health  map[string]reactor.Health
	active  []string
	changed chan struct{} // closed and replaced on every state change
	err     error         // why following stopped for good
}

func newTracker(bin, socket string, onEvent func(logEvent)) *tracker {
	return &tracker{bin: bin, socket: socket, onEvent: onEvent,
		health: map[string]reactor.Health{}, changed: make(chan struct{})}
}

// maxReconnects bounds how often a dropped event stream is re-opened.
const maxReconnects = 20

// run follows the event stream until ctx ends. A stream that breaks (daemon
// not listening yet, follower cut off) is re-opened; the history it replays
// is skipped up to the lines already seen, which holds as long as the log
// does not rotate (8 MiB, far more than a demo writes).
func (t *tracker) run(ctx context.Context) {
	var last error
	for attempt := 0; attempt <= maxReconnects; attempt++ {
		err := t.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		last = err
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
	t.mu.Lock()
	t.err = fmt.Errorf("event stream lost after %d reconnects: %w", maxReconnects, last)
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

func (t *tracker) follow(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, t.bin, "events", "-f", "--json", "--socket", t.socket)
	// Its own process group: a Ctrl-C in the terminal reaches only the
	// demo, which then stops everything in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s events: %w", t.bin, err)
	}
	t.mu.Lock()
	skip := t.lines
	t.mu.Unlock()
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if skip > 0 {
			skip--
			continue
		}
		t.consume(sc.Bytes())
	}
	scanErr := sc.Err()
	_, _ = io.Copy(io.Discard, out)
	werr := cmd.Wait()
	return errors.Join(scanErr, werr, errorText(stderr.String()))
}

func errorText(s string) error {
	if s = strings.TrimSpace(s); s != "" {
		return errors.New(s)
	}
	return nil
}

func (t *tracker) consume(line []byte) {
	ev, err := parseLogLine(line)
	t.mu.Lock()
	t.lines++
	if err != nil {
		t.mu.Unlock()
		return
	}
	t.events = append(t.events, ev)
	if d := ev.Decision; d != nil {
		for _, tr := range d.Transitions {
			t.health[tr.WAN] = tr.To
		}
		if d.ActiveChanged {
			t.active = t.active[:0]
			for _, m := range d.Active {
				t.active = append(t.active, m.WAN)
			}
		}
		close(t.changed)
		t.changed = make(chan struct{})
	}
	t.mu.Unlock()
	if t.onEvent != nil {
		t.onEvent(ev)
	}
}

// view is a consistent copy of what the tracker knows.
type view struct {
	Health map[string]reactor.Health
	Active []string
}

// activeOnly reports whether wan is up and the only active WAN.
func (v view) activeOnly(wan string) bool {
	return v.Health[wan] == reactor.Up && slices.Equal(v.Active, []string{wan})
}

func (t *tracker) snapshot() (view, <-chan struct{}, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := make(map[string]reactor.Health, len(t.health))
	for k, v := range t.health {
		h[k] = v
	}
	return view{Health: h, Active: slices.Clone(t.active)}, t.changed, t.err
}

// waitFor blocks until cond holds for the tracked state, the timeout
// passes, or ctx ends.
func (t *tracker) waitFor(ctx context.Context, timeout time.Duration, cond func(view) bool) (view, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		v, changed, err := t.snapshot()
		if cond(v) {
			return v, nil
		}
		if err != nil {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-deadline.C:
			return v, fmt.Errorf("not reached within %v (health %v, active [%s])", timeout, v.Health, strings.Join(v.Active, ","))
		case <-changed:
		}
	}
}

// eventsBetween returns the events with from <= Time < to.
func (t *tracker) eventsBetween(from, to time.Time) []logEvent {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []logEvent
	for _, e := range t.events {
		if !e.Time.Before(from) && e.Time.Before(to) {
			out = append(out, e)
		}
	}
	return out
}

package reactor

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"
)

// DecisionRecord is how a non-empty Decision is written to the event log,
// right after the event that caused it: {"source":"reactor","type":"decision"}.
// Replay recomputes every decision and compares it with these records.
type DecisionRecord struct {
	Time        time.Time      `json:"time"`
	Source      string         `json:"source"`
	Type        string         `json:"type"`
	Transitions []Transition   `json:"transitions,omitempty"`
	Active      []ActiveMember `json:"active"`
	// ActiveChanged, DesiredChanged: see Decision.
	ActiveChanged  bool     `json:"active_changed,omitempty"`
	DesiredChanged bool     `json:"desired_changed,omitempty"`
	Intents        []string `json:"intents,omitempty"`
}

// Record turns a decision into its log form.
func (d Decision) Record(at time.Time) DecisionRecord {
	r := DecisionRecord{
		Time: at.UTC(), Source: "reactor", Type: "decision",
		Transitions: d.Transitions, ActiveChanged: d.ActiveChanged, DesiredChanged: d.DesiredChanged,
		Active: d.Active,
	}
	if r.Active == nil {
		r.Active = []ActiveMember{}
	}
	for _, in := range d.Intents {
		r.Intents = append(r.Intents, IntentString(in))
	}
	return r
}

// IntentString renders an intent for logs, deterministically.
func IntentString(in Intent) string {
	switch v := in.(type) {
	case FlushConntrack:
		return fmt.Sprintf("flush_conntrack wan=%s address=%s mark=%#x/%#x (%s)", v.WAN, v.Address, v.Mark, v.Mask, v.Reason)
	case Reconcile:
		return "reconcile (" + v.Reason + ")"
	}
	return in.Kind()
}

func (r DecisionRecord) equal(o DecisionRecord) bool {
	return slices.Equal(r.Transitions, o.Transitions) && slices.Equal(r.Active, o.Active) &&
		r.ActiveChanged == o.ActiveChanged && r.DesiredChanged == o.DesiredChanged && slices.Equal(r.Intents, o.Intents)
}

// Mismatch is one decision that replay computed differently from the log.
type Mismatch struct {
	Line     int
	Event    string
	Recorded *DecisionRecord // nil: the log recorded no decision
	Replayed *DecisionRecord // nil: replay decided nothing
}

// ReplayResult summarises a replay.
type ReplayResult struct {
	Events, Decisions int
	Mismatches        []Mismatch
	// Final is the state after the last event.
	Final *State
}

// Replay feeds a recorded event log through a fresh reducer. Input events are
// applied in order; the decision line that follows an event (if any) must
// equal what the reducer decides now, and an event followed by no decision
// line must decide nothing. Action lines and unknown sources are skipped
// (they are outputs of the kernel writers, not reducer inputs). onDecision,
// if not nil, sees every replayed decision.
func Replay(r io.Reader, onDecision func(line int, e Event, d DecisionRecord)) (ReplayResult, error) {
	res := ReplayResult{Final: New()}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var pending *DecisionRecord // replayed decision awaiting its record
	var pendingLine int
	var pendingEvent string
	flush := func(recorded *DecisionRecord) {
		if pending == nil && recorded == nil {
			return
		}
		if pending == nil || recorded == nil || !pending.equal(*recorded) {
			res.Mismatches = append(res.Mismatches, Mismatch{Line: pendingLine, Event: pendingEvent, Recorded: recorded, Replayed: pending})
		}
		pending = nil
	}
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(b) == 0 {
			continue
		}
		var h struct {
			Source, Type string
		}
		if err := json.Unmarshal(b, &h); err != nil {
			return res, fmt.Errorf("line %d: %w", line, err)
		}
		switch {
		case h.Source == "reactor" && h.Type == "decision":
			var rec DecisionRecord
			if err := json.Unmarshal(b, &rec); err != nil {
				return res, fmt.Errorf("line %d: %w", line, err)
			}
			res.Decisions++
			flush(&rec)
			continue
		case h.Source == "action" || h.Source == "daemon":
			continue
		}
		var e Event
		if err := json.Unmarshal(b, &e); err != nil {
			return res, fmt.Errorf("line %d: %w", line, err)
		}
		// The previous event's decision, if any, should have been
		// recorded before this event.
		flush(nil)
		res.Events++
		d := res.Final.Apply(e)
		if !d.Empty() {
			rec := d.Record(e.Time)
			pending, pendingLine, pendingEvent = &rec, line, e.Data.Source()+"/"+e.Data.Type()
			if onDecision != nil {
				onDecision(line, e, rec)
			}
		}
	}
	flush(nil)
	return res, sc.Err()
}

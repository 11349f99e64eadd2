package eventlog

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/wanreact/wanreact/reactor"
)

// header is what every log line has in common, plus the fields of decision
// lines that name WANs.
type header struct {
	Time        time.Time              `json:"time"`
	Source      string                 `json:"source"`
	Type        string                 `json:"type"`
	WAN         string                 `json:"wan"`
	Error       string                 `json:"error"`
	Data        json.RawMessage        `json:"data"`
	Transitions []reactor.Transition   `json:"transitions"`
	Active      []reactor.ActiveMember `json:"active"`
}

// Match reports whether a log line passes the filters of `wanreact events
// --wan W --source S` (empty means any). A decision line matches a WAN when
// one of its transitions is that WAN's, or when the new active set it
// records contains it: what a user filtering by WAN wants to see are the
// verdicts on it, which carry no "wan" field of their own.
func Match(line []byte, wan, source string) bool {
	if wan == "" && source == "" {
		return true
	}
	var h header
	if json.Unmarshal(line, &h) != nil {
		return false
	}
	if source != "" && h.Source != source {
		return false
	}
	if wan == "" || h.WAN == wan {
		return true
	}
	if h.Source == "reactor" && h.Type == "decision" {
		return slices.ContainsFunc(h.Transitions, func(t reactor.Transition) bool { return t.WAN == wan }) ||
			slices.ContainsFunc(h.Active, func(m reactor.ActiveMember) bool { return m.WAN == wan })
	}
	return false
}

// timeLayout shows the day, since a log spans days, and milliseconds, since
// a failover takes a few hundred of them.
const timeLayout = "Jan _2 15:04:05.000"

// Format renders one log line for people: time, WAN, source/type, and what
// changed and why, on one line. A line it cannot parse is returned as is.
func Format(line []byte) string { return FormatIn(line, time.Local) }

// FormatIn is Format with the time shown in loc.
func FormatIn(line []byte, loc *time.Location) string {
	var h header
	if json.Unmarshal(line, &h) != nil || h.Source == "" {
		if h.Error != "" {
			return "error: " + h.Error
		}
		return string(line)
	}
	wan, detail := h.WAN, ""
	switch {
	case h.Source == "reactor" && h.Type == "decision":
		wan, detail = formatDecision(line)
	case h.Source == "action":
		detail = formatAction(h)
	default:
		var e reactor.Event
		if err := json.Unmarshal(line, &e); err != nil {
			detail = string(h.Data)
		} else {
			detail = formatEvent(e)
		}
	}
	if wan == "" {
		wan = "-"
	}
	return fmt.Sprintf("%s %-8s %-17s %s", h.Time.In(loc).Format(timeLayout), wan, h.Source+"/"+h.Type, detail)
}

func formatDecision(line []byte) (wan, detail string) {
	var r reactor.DecisionRecord
	if json.Unmarshal(line, &r) != nil {
		return "", string(line)
	}
	var parts []string
	for i, t := range r.Transitions {
		parts = append(parts, fmt.Sprintf("%s %s→%s (%s)", t.WAN, t.From, t.To, t.Reason))
		if i == 0 {
			wan = t.WAN
		} else if t.WAN != wan {
			wan = ""
		}
	}
	if r.ActiveChanged {
		names := make([]string, len(r.Active))
		for i, a := range r.Active {
			names[i] = a.WAN
			if a.Weight != 1 && len(r.Active) > 1 {
				names[i] += fmt.Sprintf("×%d", a.Weight)
			}
		}
		if len(names) == 0 {
			parts = append(parts, "active: none (no WAN can carry traffic)")
		} else {
			parts = append(parts, "active: "+strings.Join(names, ", "))
		}
	}
	parts = append(parts, r.Intents...)
	if len(parts) == 0 && r.DesiredChanged {
		parts = append(parts, "routing updated")
	}
	return wan, strings.Join(parts, "; ")
}

func formatAction(h header) string {
	var d map[string]any
	_ = json.Unmarshal(h.Data, &d)
	num := func(k string) float64 { f, _ := d[k].(float64); return f }
	str := func(k string) string { s, _ := d[k].(string); return s }
	took := time.Duration(num("duration_us")) * time.Microsecond
	switch h.Type {
	case "routing":
		s := fmt.Sprintf("%d added, %d removed, %d replaced in %v", count(d["added"]), count(d["removed"]), count(d["replaced"]), took)
		if errs, _ := d["errors"].([]any); len(errs) > 0 {
			s += fmt.Sprintf("; %d errors: %v", len(errs), errs[0])
		}
		return s
	case "conntrack":
		if e := str("error"); e != "" {
			return "flush failed: " + e
		}
		return fmt.Sprintf("%d entries deleted in %v (%s)", int(num("deleted")), took, str("reason"))
	case "hook":
		s := fmt.Sprintf("%s for %s: %s", str("hook"), str("event"), str("result"))
		if c, ok := d["exit_code"].(float64); ok && str("result") != "dropped" {
			s += fmt.Sprintf(" (exit %d)", int(c))
		}
		if took > 0 {
			s += fmt.Sprintf(" in %v", took.Round(time.Millisecond))
		}
		if out := firstLine(str("output")); out != "" {
			s += ": " + out
		}
		if e := str("error"); e != "" {
			s += ": " + e
		}
		return s
	}
	return string(h.Data)
}

func count(v any) int {
	a, _ := v.([]any)
	return len(a)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

func formatEvent(e reactor.Event) string {
	switch p := e.Data.(type) {
	case reactor.LinkChange:
		if p.Deleted {
			return p.Name + " deleted"
		}
		return fmt.Sprintf("%s %s (admin %s, carrier %s, oper %s)", p.Name, p.Type(), onOff(p.AdminUp), onOff(p.Carrier), onOff(p.OperUp))
	case reactor.CarrierChange:
		if p.Carrier {
			return p.Name + " carrier back"
		}
		return p.Name + " carrier lost"
	case reactor.AddrChange:
		return fmt.Sprintf("%s %s %s", ifName(p.Name, p.Index), p.Prefix, p.Type())
	case reactor.RouteChange:
		dst := p.Dst.String()
		if p.Dst.Bits() == 0 {
			dst = "default"
		}
		s := fmt.Sprintf("table %d %s", p.Table, dst)
		if p.Gateway.IsValid() {
			s += " via " + p.Gateway.String()
		}
		if p.Index != 0 {
			s += fmt.Sprintf(" dev #%d", p.Index)
		}
		return s + " " + p.Type()
	case reactor.RuleChange:
		s := fmt.Sprintf("priority %d table %d", p.Priority, p.Table)
		if p.Mark != 0 {
			s += fmt.Sprintf(" fwmark %#x", p.Mark)
		}
		return s + " " + p.Type()
	case reactor.ProbeResult:
		switch {
		case p.OK:
			return fmt.Sprintf("%s reply in %v (seq %d)", p.Target, p.RTT.Round(10*time.Microsecond), p.Seq)
		case p.Err != "":
			return fmt.Sprintf("%s not sent (seq %d): %s", p.Target, p.Seq, p.Err)
		}
		return fmt.Sprintf("%s lost (seq %d)", p.Target, p.Seq)
	case reactor.LeaseChange:
		s := p.Kind
		if p.Prefix.IsValid() {
			s += " " + p.Prefix.String()
		}
		if p.Gateway.IsValid() {
			s += " via " + p.Gateway.String()
		}
		if p.Server.IsValid() {
			s += " from " + p.Server.String()
		}
		if p.Lease > 0 {
			s += fmt.Sprintf(", lease %v", p.Lease)
		}
		if !p.Expiry.IsZero() {
			s += ", expires " + p.Expiry.Local().Format(timeLayout)
		}
		return s
	case reactor.WifiChange:
		s := ifName(p.Name, p.Index) + " " + p.Kind
		if p.SSID != "" {
			s += fmt.Sprintf(" ssid %q", p.SSID)
		}
		if p.BSSID != "" {
			s += " bssid " + p.BSSID
		}
		if p.Signal != 0 {
			s += fmt.Sprintf(" %d dBm", p.Signal)
		}
		if p.Reason != 0 {
			s += fmt.Sprintf(" reason %d", p.Reason)
		}
		if p.Detail != "" {
			s += " (" + p.Detail + ")"
		}
		return s
	case reactor.ConfigLoaded:
		names := make([]string, len(p.Config.WANs))
		for i, w := range p.Config.WANs {
			names[i] = w.Name
		}
		return fmt.Sprintf("configuration loaded: %d WANs (%s)", len(names), strings.Join(names, ", "))
	case reactor.Synced:
		return "kernel state read; decisions start"
	}
	b, _ := json.Marshal(e.Data)
	return string(b)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func ifName(name string, index int) string {
	if name != "" {
		return name
	}
	return fmt.Sprintf("#%d", index)
}

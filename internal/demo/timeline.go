package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wanreact/wanreact/internal/lab"
)

// panel is one failover drawn on the timeline: the flow's packets per ISP
// per bin, the probe results of each WAN, the fault and the daemon's
// decisions, over [From, To].
type panel struct {
	Title    string
	Fault    time.Time
	From, To time.Time
	ISPs     int
	Packets  []lab.Recv
	Events   []logEvent
	Outage   lab.Gap
}

// timelineBin is the width of one bar: 10 packets at 200 packets/s.
const timelineBin = 50 * time.Millisecond

// writeTimeline draws the carrier-cut and blackhole failovers of this run.
func (d *demo) writeTimeline(path string) error {
	r := d.flow.Stop() // idempotent: the final report of the whole run
	var panels []panel
	for _, name := range []string{"carrier cut on isp1", "silent blackhole on isp1"} {
		p, ok := d.res.Phase(name)
		if !ok {
			continue
		}
		from, to := p.At.Add(-500*time.Millisecond), p.At.Add(2*time.Second)
		panels = append(panels, panel{
			Title: fmt.Sprintf("%s: outage %.2f s (budget %.1f s)", name, p.Outage.Seconds(), p.Budget.Seconds()),
			Fault: p.At, From: from, To: to, ISPs: r.ISPs,
			Packets: r.Packets, Events: d.track.eventsBetween(from, to), Outage: p.Gap,
		})
	}
	if len(panels) == 0 {
		return fmt.Errorf("timeline: no failover was measured")
	}
	var buf bytes.Buffer
	title := fmt.Sprintf("wanreact failover, measured in a namespace lab (%d packets/s UDP flow from the LAN client; default probe settings)", flowPPS)
	if err := renderTimeline(&buf, title, panels, timelineBin, flowPPS); err != nil {
		return err
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("timeline: %w", err)
		}
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("timeline: %w", err)
	}
	return nil
}

// Layout of the SVG, in pixels.
const (
	svgWidth   = 960
	plotLeft   = 90
	plotRight  = 24
	panelTop   = 56 // below the title and legend
	panelH     = 236
	barsTop    = 34 // within a panel
	barsH      = 110
	probeRow1  = 162
	probeRowDY = 16
	axisY      = 200
)

var ispFill = []string{"#999999", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"}

func fillOf(isp int) string {
	if isp >= 0 && isp < len(ispFill) {
		return ispFill[isp]
	}
	return ispFill[0]
}

// renderTimeline writes an SVG with one panel per failover.
func renderTimeline(w io.Writer, title string, panels []panel, bin time.Duration, pps int) error {
	if bin <= 0 || pps <= 0 {
		return fmt.Errorf("timeline: bin %v, pps %d", bin, pps)
	}
	height := panelTop + len(panels)*panelH + 10
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11">`+"\n",
		svgWidth, height, svgWidth, height)
	b.WriteString(`<style>.halo{paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}</style>` + "\n")
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/>`+"\n", svgWidth, height)
	fmt.Fprintf(&b, `<text x="10" y="18" font-size="13" font-weight="bold">%s</text>`+"\n", esc(title))
	legend(&b, panels)
	for i, p := range panels {
		if err := drawPanel(&b, p, panelTop+i*panelH, bin, pps); err != nil {
			return err
		}
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func legend(b *strings.Builder, panels []panel) {
	isps := 2
	if len(panels) > 0 && panels[0].ISPs > 0 {
		isps = panels[0].ISPs
	}
	x := 10
	y := 38
	for i := 1; i <= isps; i++ {
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="12" height="10" fill="%s"/><text x="%d" y="%d">packets via %s</text>`+"\n",
			x, y-9, fillOf(i), x+16, y, lab.ISPRole(i))
		x += 120
	}
	fmt.Fprintf(b, `<circle cx="%d" cy="%d" r="3" fill="#2ca02c"/><text x="%d" y="%d">probe answered</text>`+"\n", x+4, y-4, x+12, y)
	x += 110
	fmt.Fprintf(b, `<circle cx="%d" cy="%d" r="3" fill="#d62728"/><text x="%d" y="%d">probe lost (shown when its timeout ends)</text>`+"\n", x+4, y-4, x+12, y)
	x += 270
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#d62728" stroke-width="2" stroke-dasharray="4,3"/><text x="%d" y="%d">fault</text>`+"\n", x, y-10, x, y+2, x+5, y)
	x += 45
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333" stroke-width="1.5"/><text x="%d" y="%d">daemon decision</text>`+"\n", x, y-10, x, y+2, x+5, y)
}

func drawPanel(b *strings.Builder, p panel, y0 int, bin time.Duration, pps int) error {
	span := p.To.Sub(p.From)
	if span <= 0 {
		return fmt.Errorf("timeline: panel %q has an empty window", p.Title)
	}
	plotW := float64(svgWidth - plotLeft - plotRight)
	x := func(t time.Time) float64 {
		return float64(plotLeft) + plotW*float64(t.Sub(p.From))/float64(span)
	}
	clampX := func(t time.Time) float64 { return min(max(x(t), plotLeft), float64(svgWidth-plotRight)) }
	fmt.Fprintf(b, `<g id="panel-%d">`+"\n", y0)
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="12" font-weight="bold">%s</text>`+"\n", plotLeft, y0+18, esc(p.Title))

	// Counts per bin and ISP.
	nbins := int((span + bin - 1) / bin)
	isps := max(p.ISPs, 1)
	counts := make([][]int, nbins)
	for i := range counts {
		counts[i] = make([]int, isps+1)
	}
	for _, r := range p.Packets {
		if r.At.Before(p.From) || !r.At.Before(p.To) {
			continue
		}
		k := int(r.At.Sub(p.From) / bin)
		if k < nbins && r.ISP >= 0 && r.ISP <= isps {
			counts[k][r.ISP]++
		}
	}
	nominal := int(int64(pps) * int64(bin) / int64(time.Second))
	yMax := max(nominal, 1)
	for _, c := range counts {
		t := 0
		for _, n := range c {
			t += n
		}
		yMax = max(yMax, t)
	}
	// A round scale (multiples of 5) with headroom for the bursts a busy
	// sender makes after a scheduling hiccup.
	yMax = (yMax + 4) / 5 * 5
	top, base := float64(y0+barsTop), float64(y0+barsTop+barsH)
	scale := float64(barsH) / float64(yMax)

	// The outage band goes under the bars.
	if !p.Outage.Start.IsZero() && p.Outage.End.After(p.Outage.Start) {
		x1, x2 := clampX(p.Outage.Start), clampX(p.Outage.End)
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#fde0e0"/>`+"\n", x1, top, max(x2-x1, 1), base-top)
		if x2-x1 > 90 { // a narrow band is labelled by the panel title alone
			fmt.Fprintf(b, `<text class="halo" x="%.1f" y="%.1f" text-anchor="middle" fill="#a00">outage %.2f s</text>`+"\n",
				(x1+x2)/2, base-6, p.Outage.Duration().Seconds())
		}
	}
	// Bars, stacked by ISP.
	bw := plotW * float64(bin) / float64(span)
	for k, c := range counts {
		bx := float64(plotLeft) + float64(k)*bw
		y := base
		for isp := 1; isp <= isps; isp++ {
			if c[isp] == 0 {
				continue
			}
			h := float64(c[isp]) * scale
			y -= h
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", bx+0.5, y, max(bw-1, 0.5), h, fillOf(isp))
		}
		if c[0] > 0 {
			h := float64(c[0]) * scale
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", bx+0.5, y-h, max(bw-1, 0.5), h, fillOf(0))
		}
	}
	// Y axis.
	fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#000"/>`+"\n", plotLeft, top, plotLeft, base)
	for v := 0; v <= yMax; v += 5 {
		yy := base - float64(v)*scale
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#000"/><text x="%d" y="%.1f" text-anchor="end">%d</text>`+"\n",
			plotLeft-4, yy, plotLeft, yy, plotLeft-6, yy+4, v)
	}
	fmt.Fprintf(b, `<text x="14" y="%.1f" transform="rotate(-90 14 %.1f)" text-anchor="middle">packets / %d ms</text>`+"\n",
		(top+base)/2, (top+base)/2, bin.Milliseconds())

	// Probe rows.
	for isp := 1; isp <= isps; isp++ {
		yy := float64(y0 + probeRow1 + (isp-1)*probeRowDY)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end">%s probes</text>`+"\n", plotLeft-6, yy+4, lab.ISPRole(isp))
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", plotLeft, yy, svgWidth-plotRight, yy)
		for _, ev := range p.Events {
			if ev.Source != "probe" || ev.WAN != lab.ISPRole(isp) {
				continue
			}
			fill := "#2ca02c"
			if !ev.ProbeOK {
				fill = "#d62728"
			}
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x(ev.Time), yy, fill)
		}
	}

	// X axis, in seconds from the fault.
	ay := float64(y0 + axisY)
	fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#000"/>`+"\n", plotLeft, ay, svgWidth-plotRight, ay)
	first := p.From.Sub(p.Fault).Truncate(250 * time.Millisecond)
	for off := first; p.Fault.Add(off).Before(p.To) || p.Fault.Add(off).Equal(p.To); off += 250 * time.Millisecond {
		t := p.Fault.Add(off)
		if t.Before(p.From) {
			continue
		}
		xx := x(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#000"/>`+"\n", xx, ay, xx, ay+4)
		if off%(500*time.Millisecond) == 0 {
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%+.1f s</text>`+"\n", xx, ay+16, off.Seconds())
		}
	}
	fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end" fill="#555">time from the fault</text>`+"\n", svgWidth-plotRight, ay+30)

	// Markers: the fault, the daemon's decisions, the first packet through
	// a different ISP. Labels are stacked so that close ones stay legible.
	type marker struct {
		at     time.Time
		label  string
		stroke string
		dash   string
	}
	ms := []marker{{p.Fault, "fault", "#d62728", "4,3"}}
	for _, ev := range p.Events {
		if ev.Decision == nil || !ev.Time.After(p.Fault) {
			continue
		}
		lines := describe(ev.Decision)
		if len(lines) == 0 {
			continue
		}
		ms = append(ms, marker{ev.Time, fmt.Sprintf("%+.2f s: %s", ev.Time.Sub(p.Fault).Seconds(), strings.Join(lines, "; ")), "#333", ""})
	}
	if before := lastISPBefore(p.Packets, p.Fault); before > 0 {
		for _, r := range p.Packets {
			if r.At.After(p.Fault) && r.ISP > 0 && r.ISP != before && r.At.Before(p.To) {
				ms = append(ms, marker{r.At, fmt.Sprintf("%+.2f s: first packet via %s", r.At.Sub(p.Fault).Seconds(), lab.ISPRole(r.ISP)), fillOf(r.ISP), "2,2"})
				break
			}
		}
	}
	const maxMarkers = 6
	if len(ms) > maxMarkers {
		ms = ms[:maxMarkers]
	}
	for k, m := range ms {
		xx := x(m.at)
		if xx < plotLeft || xx > float64(svgWidth-plotRight) {
			continue
		}
		dash := ""
		if m.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, m.dash)
		}
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5"%s/>`+"\n",
			xx, top-6, xx, float64(y0+probeRow1+probeRowDY*(isps-1))+6, m.stroke, dash)
		anchor, dx := "start", 4.0
		if xx > float64(svgWidth)*0.6 {
			anchor, dx = "end", -4
		}
		fmt.Fprintf(b, `<text class="halo" x="%.1f" y="%.1f" text-anchor="%s" fill="%s">%s</text>`+"\n",
			xx+dx, top+6+float64(k)*13, anchor, m.stroke, esc(m.label))
	}
	b.WriteString("</g>\n")
	return nil
}

// lastISPBefore is the ISP of the last packet received before t.
func lastISPBefore(pkts []lab.Recv, t time.Time) int {
	isp := 0
	for _, r := range pkts {
		if r.At.Before(t) {
			isp = r.ISP
		}
	}
	return isp
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // a strings.Builder never fails
	return b.String()
}

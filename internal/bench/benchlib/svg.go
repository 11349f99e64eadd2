package benchlib

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Picture geometry, in SVG user units.
const (
	svgWidth     = 960
	panelHeight  = 250
	marginLeft   = 60
	marginRight  = 150
	marginTop    = 40
	marginBottom = 40
)

// ispColors tells ISPs apart (colour-blind safe pair first).
var ispColors = []string{"#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00"}

// SVG draws the report's failover panels: datagrams delivered per ISP per
// bucket over the seconds around the fault, with the fault and the daemon's
// decision marked. It returns nil when there is nothing to draw.
func (r *Report) SVG() []byte {
	if len(r.Pictures) == 0 {
		return nil
	}
	h := len(r.Pictures)*(panelHeight+marginTop+marginBottom) + 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgWidth, h, svgWidth, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", svgWidth, h)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", marginLeft,
		html.EscapeString(fmt.Sprintf("Failover seen by a %d packets/s flow from the LAN client (median trial of each kind)", flowPPS)))
	y := 30
	for _, p := range r.Pictures {
		drawPanel(&b, p, y)
		y += panelHeight + marginTop + marginBottom
	}
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

func drawPanel(b *strings.Builder, p Panel, top int) {
	s := p.Series
	buckets := 0
	if len(s.Counts) > 0 {
		buckets = len(s.Counts[0])
	}
	if buckets == 0 || s.Bucket <= 0 {
		return
	}
	plotW := float64(svgWidth - marginLeft - marginRight)
	plotH := float64(panelHeight)
	x0, y0 := float64(marginLeft), float64(top+marginTop)
	spanMs := float64(buckets) * ms(s.Bucket)
	peak := 1
	for _, c := range s.Counts {
		for _, v := range c {
			peak = max(peak, v)
		}
	}
	// Headroom so the expected level (pps × bucket) is not on the frame.
	yMax := float64(peak) * 1.25
	xOf := func(t float64) float64 { return x0 + t/spanMs*plotW }
	yOf := func(v float64) float64 { return y0 + plotH - v/yMax*plotH }

	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" font-size="13" font-weight="bold">%s</text>`+"\n", x0, y0-10,
		html.EscapeString(fmt.Sprintf("%s — outage %.0f ms", p.Title, p.OutageMs)))
	fmt.Fprintf(b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`+"\n", x0, y0, plotW, plotH)
	// Y axis: a few integer ticks.
	step := max(1, peak/4)
	for v := 0; float64(v) <= yMax; v += step {
		y := yOf(float64(v))
		fmt.Fprintf(b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#eee"/>`+"\n", x0, y, x0+plotW, y)
		fmt.Fprintf(b, `<text x="%.0f" y="%.1f" text-anchor="end">%d</text>`+"\n", x0-6, y+4, v)
	}
	fmt.Fprintf(b, `<text transform="translate(%.0f,%.0f) rotate(-90)" text-anchor="middle">packets per %v</text>`+"\n",
		x0-40, y0+plotH/2, s.Bucket)
	// X axis: every 500 ms from the fault, both ways.
	for k := int(math.Ceil(-p.FaultMs / 500)); p.FaultMs+float64(k)*500 <= spanMs; k++ {
		x := xOf(p.FaultMs + float64(k)*500)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#999"/>`+"\n", x, y0+plotH, x, y0+plotH+5)
		fmt.Fprintf(b, `<text x="%.1f" y="%.0f" text-anchor="middle">%+.1f s</text>`+"\n", x, y0+plotH+18, float64(k)/2)
	}
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" text-anchor="middle">time from the fault (arrival at the sink)</text>`+"\n",
		x0+plotW/2, y0+plotH+34)
	// One step line per ISP.
	for i, c := range s.Counts {
		var pts []string
		for k, v := range c {
			xa, xb := xOf(float64(k)*ms(s.Bucket)), xOf(float64(k+1)*ms(s.Bucket))
			y := yOf(float64(v))
			pts = append(pts, fmt.Sprintf("%.1f,%.1f %.1f,%.1f", xa, y, xb, y))
		}
		color := ispColors[i%len(ispColors)]
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		ly := y0 + 20 + float64(i)*18
		fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="3"/>`+"\n",
			x0+plotW+12, ly-4, x0+plotW+32, ly-4, color)
		fmt.Fprintf(b, `<text x="%.0f" y="%.0f">isp%d</text>`+"\n", x0+plotW+38, ly, i+1)
	}
	marker := func(t float64, color, label string, row int) {
		x := xOf(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="%s" stroke-width="1.5" stroke-dasharray="5,3"/>`+"\n",
			x, y0, x, y0+plotH, color)
		fmt.Fprintf(b, `<text x="%.1f" y="%.0f" fill="%s">%s</text>`+"\n", x+4, y0+14+float64(row)*14, color, html.EscapeString(label))
	}
	marker(p.FaultMs, "#d00", "fault", 0)
	if p.DecisionMs >= 0 {
		marker(p.DecisionMs, "#080", fmt.Sprintf("decision (+%.0f ms)", p.DecisionMs-p.FaultMs), 1)
	}
	if p.RestoreMs > 0 && p.RestoreMs <= spanMs {
		marker(p.RestoreMs, "#777", "fault removed", 0)
	}
}

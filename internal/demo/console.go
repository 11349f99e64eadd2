package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/wanreact/wanreact/internal/lab"
	"golang.org/x/sys/unix"
)

// console serialises everything the demo prints: slot lines, daemon
// decisions and phase banners come from different goroutines and must never
// interleave mid-line. ANSI colours are used only on a terminal, so that a
// redirected run stays a clean log.
type console struct {
	mu    sync.Mutex
	w     io.Writer
	color bool
	// t0 is the demo's time origin (the daemon's start): every line says
	// "t=" relative to it, so flow slots and decisions share one clock.
	t0 time.Time

	// While the live display runs, timed lines (decisions, banners,
	// results) wait in queue until the slot line they fall before is
	// printed: a slot is only printed once complete, and without the
	// queue a decision would appear above the traffic that preceded it.
	queueing bool
	queue    []timedLine
}

type timedLine struct {
	at   time.Time
	text string
}

// isTerminal reports whether f is a terminal (and colours are welcome:
// NO_COLOR, https://no-color.org, turns them off).
func isTerminal(f *os.File) bool {
	if os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// ANSI SGR codes used by the demo.
const (
	sgrBold   = "1"
	sgrRed    = "31"
	sgrGreen  = "32"
	sgrYellow = "33"
	sgrCyan   = "36"
	sgrDim    = "2"
)

// paint wraps s in an SGR sequence when colours are on.
func (c *console) paint(sgr, s string) string {
	if !c.color || s == "" {
		return s
	}
	return "\x1b[" + sgr + "m" + s + "\x1b[0m"
}

func (c *console) println(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintln(c.w, s)
}

func (c *console) printf(format string, args ...any) {
	c.println(fmt.Sprintf(format, args...))
}

// at prints a line that belongs at time t of the timeline: at once, or,
// while the live display runs, in time order with the slot lines.
func (c *console) at(t time.Time, s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.queueing {
		fmt.Fprintln(c.w, s)
		return
	}
	// Lines come from several goroutines, slightly out of order: keep
	// the queue sorted, equal times in arrival order.
	i := sort.Search(len(c.queue), func(i int) bool { return c.queue[i].at.After(t) })
	c.queue = slices.Insert(c.queue, i, timedLine{t, s})
}

// slot prints the line of the slot starting at start, after every queued
// line from before start.
func (c *console) slot(start time.Time, s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushBefore(start)
	fmt.Fprintln(c.w, s)
}

func (c *console) flushBefore(t time.Time) {
	n := 0
	for n < len(c.queue) && (t.IsZero() || c.queue[n].at.Before(t)) {
		fmt.Fprintln(c.w, c.queue[n].text)
		n++
	}
	c.queue = c.queue[n:]
}

// setQueueing turns time ordering on or off; turning it off prints what is
// still queued.
func (c *console) setQueueing(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !on {
		c.flushBefore(time.Time{})
	}
	c.queueing = on
}

// stamp renders a wall-clock time as "t=  3.20s" on the demo's clock.
func (c *console) stamp(at time.Time) string {
	return fmt.Sprintf("t=%6.2fs", at.Sub(c.t0).Seconds())
}

// ispColor gives each ISP its own colour in the bars.
func ispColor(i int) string {
	switch i {
	case 1:
		return sgrCyan
	case 2:
		return sgrYellow
	}
	return sgrDim
}

// barWidth is the number of characters a full slot's bar takes.
const barWidth = 20

// slotLine renders one slot of the flow, e.g.
//
//	t=  3.20s  isp1 ████████████████████  40 │ isp2                        0
//
// full is the packet count of a slot at the flow's nominal rate: it maps to
// barWidth characters (bursts after a stall may exceed it and are capped).
func (c *console) slotLine(at time.Time, b lab.Bucket, full int) string {
	var sb strings.Builder
	sb.WriteString(c.stamp(at))
	for i := 1; i < len(b.PerISP); i++ {
		if i > 1 {
			sb.WriteString(" │")
		}
		n := b.PerISP[i]
		w := 0
		if full > 0 {
			w = min(barWidth, (n*barWidth+full/2)/full)
		}
		if n > 0 && w == 0 {
			w = 1 // a trickle must stay visible
		}
		bar := strings.Repeat("█", w) + strings.Repeat(" ", barWidth-w)
		fmt.Fprintf(&sb, "  %s %s %3d", lab.ISPRole(i), c.paint(ispColor(i), bar), n)
	}
	if len(b.PerISP) > 0 && b.PerISP[0] > 0 {
		fmt.Fprintf(&sb, " │ other %d", b.PerISP[0])
	}
	if b.Total == 0 {
		sb.WriteString("  " + c.paint(sgrRed, "← no packets"))
	}
	return sb.String()
}

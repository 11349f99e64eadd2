package benchlib

import (
	"time"

	"github.com/wanreact/wanreact/internal/lab"
)

// lateAfter is the one-way delay beyond which a packet of the test flow
// counts as lost for the outage: real-time traffic (VoIP, games) has no use
// for it. In the idle lab one-way delay is well under a millisecond.
const lateAfter = 100 * time.Millisecond

// fate is what became of one datagram of a flow, by sequence number.
type fate struct {
	// sent is the send time; for a datagram sendto refused it is
	// interpolated from its predecessor (it still counts as lost).
	sent     time.Time
	received bool
	at       time.Time // kernel receive time at the sink
	isp      int
}

func (f fate) onTime() bool { return f.received && f.at.Sub(f.sent) <= lateAfter }

// fates lines up a flow's send log with its receptions.
func fates(r lab.FlowReport) []fate {
	fs := make([]fate, len(r.SendTimes))
	interval := time.Second / time.Duration(max(r.PPS, 1))
	prev := r.Start.Add(-interval)
	for seq, t := range r.SendTimes {
		if t.IsZero() {
			t = prev.Add(interval)
		}
		fs[seq].sent = t
		prev = t
	}
	for _, p := range r.Packets {
		if p.Seq >= uint64(len(fs)) || fs[p.Seq].received {
			continue
		}
		fs[p.Seq].received, fs[p.Seq].at, fs[p.Seq].isp = true, p.At, p.ISP
	}
	return fs
}

// badRun is a run of consecutive datagrams that did not arrive usefully.
type badRun struct {
	// Start is the send time of the run's first datagram, End that of the
	// first good one after it (or the window's end if there is none).
	Start, End time.Time
	Packets    int
	// Recovered is false when the window ended inside the run: the
	// duration is then a lower bound.
	Recovered bool
}

func (b badRun) duration() time.Duration { return b.End.Sub(b.Start) }

// longestBadRun finds the longest run of datagrams sent in [from, until)
// for which bad holds. Measuring in send time makes the result independent
// of how late the sink happened to read, and equal to the time during which
// anything the client sent was lost.
func longestBadRun(fs []fate, from, until time.Time, bad func(fate) bool) badRun {
	best := badRun{Recovered: true}
	runStart, n := -1, 0
	for i, f := range fs {
		if f.sent.Before(from) {
			continue
		}
		if !f.sent.Before(until) {
			break
		}
		if bad(f) {
			if runStart < 0 {
				runStart, n = i, 0
			}
			n++
			continue
		}
		if runStart >= 0 {
			r := badRun{Start: fs[runStart].sent, End: f.sent, Packets: n, Recovered: true}
			if r.duration() > best.duration() {
				best = r
			}
			runStart = -1
		}
	}
	if runStart >= 0 {
		r := badRun{Start: fs[runStart].sent, End: until, Packets: n, Recovered: false}
		if r.duration() >= best.duration() {
			best = r
		}
	}
	return best
}

// faultOutage is the outage a fault on ISP faulted caused: the longest run
// of datagrams sent between the fault and its removal that were lost, late,
// or carried by the faulted ISP. The last matters for faults that let some
// traffic through: a path that loses every reply (or delays everything by a
// second) is dead for two-way traffic even if the test flow's one-way
// datagrams arrive.
func faultOutage(fs []fate, faulted int, from, until time.Time) badRun {
	return longestBadRun(fs, from, until, func(f fate) bool {
		return !f.onTime() || f.isp == faulted
	})
}

// plainOutage is the longest run of lost or late datagrams, whatever ISP
// carried the others (failback: both ISPs work).
func plainOutage(fs []fate, from, until time.Time) badRun {
	return longestBadRun(fs, from, until, func(f fate) bool { return !f.onTime() })
}

// firstVia returns the send time of the first datagram sent at or after t
// that arrived on time through isp.
func firstVia(fs []fate, t time.Time, isp int) (time.Time, bool) {
	for _, f := range fs {
		if !f.sent.Before(t) && f.onTime() && f.isp == isp {
			return f.sent, true
		}
	}
	return time.Time{}, false
}

// series is packets received per ISP per bucket: the data of the picture.
type series struct {
	// Start is the time of the first bucket's left edge.
	Start  time.Time     `json:"start"`
	Bucket time.Duration `json:"bucket_ns"`
	// Counts[isp-1][k] is the packets ISP isp delivered in bucket k.
	Counts [][]int `json:"counts"`
}

// bucketize counts packets received in [from, to) per ISP in buckets of width.
func bucketize(r lab.FlowReport, from, to time.Time, width time.Duration) series {
	n := int((to.Sub(from) + width - 1) / width)
	s := series{Start: from, Bucket: width, Counts: make([][]int, r.ISPs)}
	for i := range s.Counts {
		s.Counts[i] = make([]int, n)
	}
	for _, p := range r.Packets {
		if p.At.Before(from) || !p.At.Before(to) || p.ISP < 1 || p.ISP > r.ISPs {
			continue
		}
		s.Counts[p.ISP-1][int(p.At.Sub(from)/width)]++
	}
	return s
}

package benchlib

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"strings"
	"testing"
	"time"
)

// sampleReport is a report as a full run would produce it, with one miss
// (blackhole) and one section missing (stability).
func sampleReport() *Report {
	r := &Report{
		Mode: "full", Started: t0, Seconds: 1200, Version: "v0-test",
		Host:  Host{Kernel: "6.1", CPUs: 2, CPU: "test", Go: "go1.26"},
		Probe: &ProbeSettings{Targets: 2, IntervalMs: 200, TimeoutMs: 300, DownAfter: 8, UpAfter: 5, Window: 50, DegradedPct: 20, RecoverPct: 8},
		Failover: []FailoverResult{
			{Kind: "carrier", Description: "carrier loss", Trials: 20, Outage: Stats{N: 20, Min: 5, Median: 10, P99: 30}, Detect: Stats{N: 20, Median: 1, P99: 3}},
			{Kind: "blackhole", Description: "blackhole", Trials: 20, Outage: Stats{N: 20, Min: 1000, Median: 1080, P99: 1110}, Detect: Stats{N: 20, Median: 1070}},
		},
		Failback: []FailbackResult{{After: "carrier", Trials: 20, Return: Stats{Median: 670}}},
		Pictures: []Panel{{Title: "carrier <cut> & co", Kind: "carrier", FaultMs: 800, DecisionMs: 805, RestoreMs: 1900, OutageMs: 10,
			Series: series{Start: t0, Bucket: 25 * time.Millisecond, Counts: sampleCounts()}}},
		Cost: []CostResult{
			{WANs: 2, TargetsPerWAN: 4, ProbesPerSec: 40, WindowSeconds: 30, CPUPercent: 0.8, CPUSeconds: 0.24, RSSMB: 9.7, PeakRSSMB: 9.9},
			{WANs: 2, TargetsPerWAN: 4, ProbeInterval: "10s", ProbesPerSec: 0.8, CPUPercent: 0.3},
		},
		Storm: &StormResult{Routes: 10000, Changes: 20000, StormMs: 200, StateEqual: true,
			InProcess: &InProcessStorm{RcvBuf: 4096, Resyncs: 3, ViewMatches: true, DesiredEqual: true}},
		Micro:  []MicroResult{{Package: "reactor", Name: "BenchmarkApplyProbeReply/wans=2", Iterations: 1, NsPerOp: 2300, BytesPerOp: 736, AllocsPerOp: 7}},
		Errors: []string{"stability: lab broke\nsecond line"},
	}
	r.Targets = r.checkTargets()
	return r
}

// sampleCounts is 3 s of 25 ms buckets: isp1 until 0.8 s, isp2 until
// 1.9 s, isp1 again.
func sampleCounts() [][]int {
	c := [][]int{make([]int, 120), make([]int, 120)}
	for k := range 120 {
		if k < 32 || k >= 76 {
			c[0][k] = 5
		} else {
			c[1][k] = 5
		}
	}
	return c
}

func TestCheckTargets(t *testing.T) {
	r := sampleReport()
	got := map[string]TargetCheck{}
	for _, c := range r.Targets {
		got[c.Name] = c
	}
	if len(r.Targets) != 5 {
		t.Fatalf("%d targets: %+v", len(r.Targets), r.Targets)
	}
	if c := got["carrier loss outage, p99"]; !c.Met {
		t.Errorf("carrier 30 ms p99 not met: %+v", c)
	}
	bh := got["silent blackhole outage, p99"]
	if bh.Met || !strings.Contains(bh.Note, "1000–1100 ms") || !strings.Contains(bh.Note, "timeout ≤ 200 ms or down_after ≤ 7") {
		t.Errorf("blackhole: %+v", bh)
	}
	if c := got["state changes in any 40 s at 30 % loss"]; c.Met || c.Measured != "not measured" {
		t.Errorf("missing stability must not pass: %+v", c)
	}
	// The baseline row (probes every 10 s) must not stand in for the
	// default-rate measurement.
	if c := got["idle CPU, 2 WANs × 4 targets"]; !c.Met || !strings.HasPrefix(c.Measured, "0.80 %") {
		t.Errorf("cpu: %+v", c)
	}
	if c := got["RSS, 2 WANs × 4 targets"]; !c.Met {
		t.Errorf("rss: %+v", c)
	}
}

func TestMarkdown(t *testing.T) {
	md := string(sampleReport().Markdown())
	for _, want := range []string{
		"| carrier loss outage, p99 | ≤ 50 ms | 30 ms (20 trials) | met |",
		"| silent blackhole outage, p99 | ≤ 1 s | 1110 ms (20 trials) | **MISSED** |",
		"| carrier loss | 20 | 5 ms | 10 ms | 30 ms |",
		"](" + PictureFile + ")",
		"| 2 | 4 | 10s (baseline) |",
		"10000 routes added and deleted again (20000 route changes)",
		"## Not measured",
		"stability: lab broke second line",
		"| reactor | ApplyProbeReply/wans=2 | 2300 | 736 | 7 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	if strings.Contains(md, "%!") {
		t.Errorf("bad format verb in markdown:\n%s", md)
	}
	if strings.Contains(md, "smoke run") {
		t.Error("full run labelled as smoke")
	}
	r := sampleReport()
	r.Mode = "smoke"
	if !strings.Contains(string(r.Markdown()), "This is a smoke run") {
		t.Error("smoke run not labelled")
	}
}

func TestSVG(t *testing.T) {
	svg := sampleReport().SVG()
	// Well-formed XML, with the title escaped.
	d := xml.NewDecoder(bytes.NewReader(svg))
	polylines, texts := 0, []string{}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, svg)
		}
		switch v := tok.(type) {
		case xml.StartElement:
			if v.Name.Local == "polyline" {
				polylines++
			}
		case xml.CharData:
			texts = append(texts, string(v))
		}
	}
	if polylines != 2 {
		t.Errorf("%d polylines, want one per ISP", polylines)
	}
	all := strings.Join(texts, "|")
	for _, want := range []string{"carrier <cut> & co", "fault", "decision (+5 ms)", "fault removed", "isp1", "isp2", "+0.0 s", "-0.5 s", "+0.5 s"} {
		if !strings.Contains(all, want) {
			t.Errorf("picture lacks %q: %s", want, all)
		}
	}
	if (&Report{}).SVG() != nil {
		t.Error("empty report drew a picture")
	}
}

func TestJSONRoundTrip(t *testing.T) {
	r := sampleReport()
	b, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Failover[1].Outage.P99 != 1110 || back.Pictures[0].Series.Bucket != 25*time.Millisecond || back.Cost[1].ProbeInterval != "10s" {
		t.Fatalf("round trip lost data: %+v", back)
	}
}

package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wanreact/wanreact/internal/bench/benchlib"
)

// Budgets of the core issue, which a smoke run on a noisy 2-core CI machine
// must still meet (the bench's own targets are reported, not asserted).
const (
	carrierBudgetMs   = 500
	blackholeBudgetMs = 1500
)

// TestSmoke runs every section of the bench briefly, the way `make bench`
// runs them at length, writes the three files, and checks that the results
// are sane. It is what keeps the bench from rotting.
func TestSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root and network namespaces")
	}
	if testing.Short() {
		t.Skip("lab benchmark skipped in -short mode")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "wanreact")
	build := exec.Command("go", "build", "-o", bin, "github.com/wanreact/wanreact/cmd/wanreact")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	opts := benchlib.SmokeOptions(bin)
	opts.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	rep, err := benchlib.Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range rep.Errors {
		t.Errorf("not measured: %s", e)
	}

	kinds := map[string]benchlib.FailoverResult{}
	for _, f := range rep.Failover {
		kinds[f.Kind] = f
	}
	for _, k := range []string{"carrier", "blackhole", "oneway", "latency"} {
		f, ok := kinds[k]
		if !ok || f.Trials != opts.Trials || f.Unrecovered != 0 {
			t.Errorf("%s: %+v", k, f)
			continue
		}
		// Probe-detected faults cannot fail over before the first lost
		// probe has timed out: an outage shorter than that means the
		// measurement, not the daemon, is broken.
		if k != "carrier" && (f.Outage.Min < float64(rep.Probe.TimeoutMs) || f.Detect.Min < float64(rep.Probe.TimeoutMs)) {
			t.Errorf("%s: outage %+v, detect %+v: faster than one probe timeout", k, f.Outage, f.Detect)
		}
	}
	if f := kinds["carrier"]; f.Outage.P99 > carrierBudgetMs {
		t.Errorf("carrier outage p99 %.0f ms > %d ms", f.Outage.P99, carrierBudgetMs)
	}
	if f := kinds["blackhole"]; f.Outage.P99 > blackholeBudgetMs {
		t.Errorf("blackhole outage p99 %.0f ms > %d ms", f.Outage.P99, blackholeBudgetMs)
	}
	if len(rep.Failback) != 4 {
		t.Errorf("failback: %+v", rep.Failback)
	}
	for _, f := range rep.Failback {
		if f.NotReturned != 0 || f.Return.Median <= 0 {
			t.Errorf("failback after %s: %+v", f.After, f)
		}
	}

	if len(rep.Stability) != len(opts.StabilityLevels) {
		t.Errorf("stability: %+v", rep.Stability)
	}
	for _, s := range rep.Stability {
		if s.Seconds < opts.StabilityDuration.Seconds() || s.Transitions < 0 || s.ActiveShare < 0 || s.ActiveShare > 1 {
			t.Errorf("stability at %.0f%%: %+v", s.Loss*100, s)
		}
	}

	if len(rep.Cost) != 2 {
		t.Errorf("cost: %+v", rep.Cost)
	}
	for _, c := range rep.Cost {
		// Sanity, not the target: the daemon does use some CPU and
		// memory, and not absurd amounts.
		if c.CPUSeconds <= 0 || c.CPUPercent > 50 || c.RSSMB < 1 || c.RSSMB > 200 || c.PeakRSSMB < c.RSSMB {
			t.Errorf("cost: %+v", c)
		}
	}
	if s := rep.Startup; s == nil || s.FirstDecision.N != opts.StartupRuns || s.FirstDecision.Median <= 0 || s.ISP1Up.Median < s.FirstDecision.Median {
		t.Errorf("startup: %+v", rep.Startup)
	}

	if s := rep.Storm; s == nil {
		t.Error("no storm result")
	} else {
		if !s.StateEqual {
			t.Errorf("state changed by the storm: %v", s.StateDiff)
		}
		if !s.CutOK || s.CutOutageMs > carrierBudgetMs {
			t.Errorf("carrier cut during the storm: outage %.0f ms, recovered %v", s.CutOutageMs, s.CutOK)
		}
		ip := s.InProcess
		if ip == nil || ip.Resyncs == 0 || !ip.ViewMatches || !ip.DesiredEqual || ip.Events == 0 || ip.ReducerP50us <= 0 {
			t.Errorf("in-process storm (resync must be exercised): %+v", ip)
		}
	}
	if r := rep.Reducer; r == nil || r.Events == 0 || r.Mismatches != 0 {
		t.Errorf("reducer replay: %+v", r)
	}

	pkgs := map[string]int{}
	for _, m := range rep.Micro {
		pkgs[m.Package]++
		if m.NsPerOp <= 0 || m.Iterations < 1 {
			t.Errorf("micro %s %s: %+v", m.Package, m.Name, m)
		}
	}
	for _, p := range opts.MicroPackages {
		if pkgs[strings.TrimPrefix(p, "./")] == 0 {
			t.Errorf("no micro-benchmark result for %s", p)
		}
	}

	out := filepath.Join(dir, "docs")
	files, err := writeReport(rep, out)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("wrote %v", files)
	}
	md, _ := os.ReadFile(filepath.Join(out, "benchmarks.md"))
	for _, want := range []string{"## Targets", "## Failover", "## Stability", "## Cost", "## Netlink storm", "## Micro-benchmarks", benchlib.PictureFile} {
		if !strings.Contains(string(md), want) {
			t.Errorf("benchmarks.md lacks %q", want)
		}
	}
	var back benchlib.Report
	js, _ := os.ReadFile(filepath.Join(out, "benchmarks.json"))
	if err := json.Unmarshal(js, &back); err != nil || len(back.Failover) != 4 {
		t.Errorf("benchmarks.json: %v", err)
	}
	t.Logf("targets: %+v", rep.Targets)
}

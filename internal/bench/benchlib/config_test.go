package benchlib

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/wanreact/wanreact/config"
)

// TestDaemonConfigParses feeds the configs the bench gives the daemon to
// the daemon's own parser: a config the daemon refuses would only show up
// as a bench that never reaches its steady state.
func TestDaemonConfigParses(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		isps, targets int
		interval      string
		want          time.Duration
	}{{2, 2, "", config.DefaultInterval}, {32, 4, "", config.DefaultInterval}, {2, 4, baselineInterval, 10 * time.Second}} {
		p := filepath.Join(dir, "wanreact.yaml")
		y := daemonConfig(c.isps, probeTargets(c.targets), c.interval, dir, filepath.Join(dir, "s.sock"), filepath.Join(dir, "ev.jsonl"))
		if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(p)
		if err != nil {
			t.Fatalf("%d ISPs: %v\n%s", c.isps, err, y)
		}
		if len(cfg.WANs) != c.isps || len(cfg.WANs[0].Probe.Targets) != c.targets || cfg.WANs[0].Probe.Interval != c.want {
			t.Fatalf("%d ISPs parsed as %+v", c.isps, cfg.WANs[0])
		}
		if cfg.WANs[c.isps-1].Name != "isp"+strconv.Itoa(c.isps) || cfg.WANs[c.isps-1].Interface != "wan"+strconv.Itoa(c.isps-1) {
			t.Fatalf("last WAN %+v", cfg.WANs[c.isps-1])
		}
		if iv, err := probeInterval(p); err != nil || iv != c.want {
			t.Fatalf("probeInterval %v %v", iv, err)
		}
	}
}

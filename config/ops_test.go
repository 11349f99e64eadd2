package config

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

const opsBase = `
wans:
  - {name: a, interface: wan0, table: 10, addressing: external, probe: {targets: [198.51.100.1]}}
`

func TestOpsDefaults(t *testing.T) {
	c, err := Parse("f.yaml", []byte(opsBase))
	if err != nil {
		t.Fatal(err)
	}
	if c.Hooks != DefaultHooks() || c.Hooks.Dir != "/etc/wanreact/hooks.d" || c.Hooks.Timeout != 10*time.Second {
		t.Errorf("hooks defaults = %+v", c.Hooks)
	}
	if c.EventLogMaxSize != 8<<20 || c.ControlGroup != "" || c.MetricsListen != "" {
		t.Errorf("defaults: size=%d group=%q metrics=%q", c.EventLogMaxSize, c.ControlGroup, c.MetricsListen)
	}
}

func TestOpsKeys(t *testing.T) {
	c, err := Parse("f.yaml", []byte(`
control_group: wanreact
event_log_max_size: 512K
metrics_listen: "[::1]:9343"
hooks:
  dir: /usr/local/lib/wanreact/hooks
  timeout: 2s
  max_parallel: 2
  queue: 10
`+opsBase))
	if err != nil {
		t.Fatal(err)
	}
	want := Hooks{Dir: "/usr/local/lib/wanreact/hooks", Timeout: 2 * time.Second, MaxParallel: 2, Queue: 10}
	if c.Hooks != want {
		t.Errorf("hooks = %+v, want %+v", c.Hooks, want)
	}
	if c.EventLogMaxSize != 512<<10 || c.ControlGroup != "wanreact" || c.MetricsListen != "[::1]:9343" {
		t.Errorf("size=%d group=%q metrics=%q", c.EventLogMaxSize, c.ControlGroup, c.MetricsListen)
	}
	// Sizes in every accepted spelling.
	for in, want := range map[string]int64{"4096": 4096, "8M": 8 << 20, "8MiB": 8 << 20, "1g": 1 << 30, "64 KB": 64 << 10, "5000b": 5000} {
		c, err := Parse("f.yaml", []byte("event_log_max_size: "+in+"\n"+opsBase))
		if err != nil || c.EventLogMaxSize != want {
			t.Errorf("event_log_max_size %q = %v, %v; want %d", in, c, err, want)
		}
	}
	// An empty hooks dir turns hooks off; a numeric group is accepted.
	c, err = Parse("f.yaml", []byte("control_group: 998\nhooks: {dir: \"\"}\n"+opsBase))
	if err != nil || c.Hooks.Dir != "" || c.Hooks.Timeout != DefaultHookTimeout || c.ControlGroup != "998" {
		t.Errorf("empty dir / numeric group: %+v %v", c, err)
	}
}

func TestOpsErrorsHavePositions(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"relative hooks dir", "hooks:\n  dir: hooks.d\n", `f.yaml:2:8: "hooks.d" must be an absolute path`},
		{"hook timeout", "hooks: {timeout: 10}\n", `f.yaml:1:18: bad duration "10"`},
		{"short hook timeout", "hooks: {timeout: 1ms}\n", `f.yaml:1:18: duration 1ms is below the minimum 100ms`},
		{"max_parallel", "hooks:\n  max_parallel: 0\n", `f.yaml:2:17: 0 is out of range [1, 64]`},
		{"unknown hook key", "hooks:\n  directory: /x\n", `f.yaml:2:3: unknown key "directory" in hooks (known: dir, max_parallel, queue, timeout)`},
		{"hooks not a map", "hooks: /etc/x\n", `f.yaml:1:8: hooks must be a mapping`},
		{"bad size", "event_log_max_size: lots\n", `f.yaml:1:21: bad size "lots"`},
		{"small size", "event_log_max_size: 100\n", `f.yaml:1:21: size 100 is below the minimum 4096`},
		{"huge size", "event_log_max_size: 99999999G\n", `f.yaml:1:21: size "99999999G" is too large`},
		{"bad group", "control_group: \"wheel users\"\n", `f.yaml:1:16: control_group "wheel users" is not a group name`},
		{"root group", "control_group: 0\n", `f.yaml:1:16: control_group 0 is root's group`},
		{"metrics no port", "metrics_listen: 127.0.0.1\n", `f.yaml:1:17: metrics_listen "127.0.0.1" is not host:port`},
		{"metrics name", "metrics_listen: localhost:9343\n", `f.yaml:1:17: metrics_listen "localhost:9343": host must be an IP address`},
		{"metrics port", "metrics_listen: 127.0.0.1:99999\n", `f.yaml:1:17: metrics_listen "127.0.0.1:99999": port must be 1-65535`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tc.yaml+opsBase))
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("err = %v, want Problems", err)
			}
			if len(ps) != 1 {
				t.Errorf("want exactly one problem, got:\n%s", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got:\n%s\nwant a line containing %q", err, tc.want)
			}
		})
	}
}

// TestMarkMaskFull32Bits: a mask using bit 31 parses on every
// architecture (it once overflowed int on 32-bit builds).
func TestMarkMaskFull32Bits(t *testing.T) {
	c, err := Parse("f.yaml", []byte("routing: {mark_mask: 0xff000000}\n"+opsBase))
	if err != nil || c.Routing.MarkMask != 0xff000000 {
		t.Fatalf("mask = %#x, %v", c.Routing.MarkMask, err)
	}
	if _, err := Parse("f.yaml", []byte("routing: {mark_mask: 0x1ffffffff}\n"+opsBase)); err == nil || !strings.Contains(err.Error(), "must be a non-zero 32-bit mask") {
		t.Fatalf("33-bit mask: %v", err)
	}
}

// TestConfigurationDocIsComplete keeps docs/configuration.md honest: its
// full example parses, and every key the parser knows (read back from the
// "unknown key" message of each section) is documented in a table row.
func TestConfigurationDocIsComplete(t *testing.T) {
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "## A complete example")
	_, rest, ok2 := strings.Cut(rest, "```yaml\n")
	example, _, ok3 := strings.Cut(rest, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("no example in docs/configuration.md")
	}
	if _, err := Parse("configuration.md", []byte(example)); err != nil {
		t.Errorf("the documented example does not parse:\n%v", err)
	}
	wan := "  - {name: a, interface: wan0, table: 10, addressing: dhcp, probe: {targets: [198.51.100.1]%s}%s}\n"
	for section, yaml := range map[string]string{
		"top level": "zzz: 1\nwans:\n" + fmt.Sprintf(wan, "", ""),
		"routing":   "routing: {zzz: 1}\nwans:\n" + fmt.Sprintf(wan, "", ""),
		"hooks":     "hooks: {zzz: 1}\nwans:\n" + fmt.Sprintf(wan, "", ""),
		"wan":       "wans:\n" + fmt.Sprintf(wan, "", ", zzz: 1"),
		"probe":     "wans:\n" + fmt.Sprintf(wan, ", zzz: 1", ""),
		"dhcp":      "wans:\n" + fmt.Sprintf(wan, "", ", dhcp: {zzz: 1}"),
		"wifi":      "wans:\n" + fmt.Sprintf(wan, "", ", wifi: {min_signal: -70, zzz: 1}"),
	} {
		_, err := Parse("f.yaml", []byte(yaml))
		m := regexp.MustCompile(`unknown key "zzz" in ` + section + ` \(known: ([a-z_, ]+)\)`).FindStringSubmatch(fmt.Sprint(err))
		if m == nil {
			t.Errorf("%s: no list of known keys in %v", section, err)
			continue
		}
		for _, k := range strings.Split(m[1], ", ") {
			if !strings.Contains(string(doc), "| `"+k+"` |") {
				t.Errorf("key %q of %s is not documented in docs/configuration.md", k, section)
			}
		}
	}
}

package config

import (
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Hooks configures the user executables run on state changes (see
// docs/operations.md). They run outside the reactor goroutine, so a slow or
// hanging hook never delays a failover.
type Hooks struct {
	// Dir holds the hooks: every executable regular file in it runs, in
	// name order, for every hook event. Empty disables hooks; a missing
	// directory simply means there are none yet.
	Dir string `json:"dir,omitempty"`
	// Timeout bounds one executable's run; then its process group is
	// killed.
	Timeout time.Duration `json:"timeout"`
	// MaxParallel bounds the hook events handled at once (events of the
	// same WAN always run one after the other, in order).
	MaxParallel int `json:"max_parallel"`
	// Queue bounds the hook events waiting to run; beyond it new events
	// are dropped with a logged warning rather than piling up.
	Queue int `json:"queue"`
}

// Operations defaults.
const (
	DefaultHooksDir        = "/etc/wanreact/hooks.d"
	DefaultHookTimeout     = 10 * time.Second
	DefaultHookParallel    = 4
	DefaultHookQueue       = 64
	DefaultEventLogMaxSize = 8 << 20
	// MinEventLogMaxSize keeps a rotated pair of files able to hold at
	// least a few dozen lines (a config line alone can take a few KiB).
	MinEventLogMaxSize = 4 << 10
)

// DefaultHooks is the hooks configuration when the file says nothing.
func DefaultHooks() Hooks {
	return Hooks{Dir: DefaultHooksDir, Timeout: DefaultHookTimeout, MaxParallel: DefaultHookParallel, Queue: DefaultHookQueue}
}

func (p *parser) hooks(n *yaml.Node) Hooks {
	h := DefaultHooks()
	p.mapping(n, "hooks", map[string]func(k, v *yaml.Node){
		"dir": func(_, v *yaml.Node) {
			// An explicit empty dir turns hooks off; p.path accepts "".
			h.Dir = p.path(v)
		},
		"timeout":      func(_, v *yaml.Node) { h.Timeout = p.duration(v, 100*time.Millisecond) },
		"max_parallel": func(_, v *yaml.Node) { h.MaxParallel = p.intRange(v, 1, 64) },
		"queue":        func(_, v *yaml.Node) { h.Queue = p.intRange(v, 1, 10000) },
	})
	return h
}

// groupRE is what a group name may look like (shadow-utils' rule, which
// also keeps spaces and colons out).
var groupRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$`)

// group accepts a group name or a numeric gid. Whether the group exists is
// checked when the daemon starts, not here: `wanreact check` may run on
// another machine than the router.
func (p *parser) group(n *yaml.Node) string {
	s := p.str(n)
	if s == "" {
		return ""
	}
	if id, err := strconv.ParseUint(s, 10, 32); err == nil {
		if id == 0 {
			p.errf(n, "control_group 0 is root's group, which has access anyway; leave control_group out")
		}
		return s
	}
	if !groupRE.MatchString(s) {
		p.errf(n, "control_group %q is not a group name or number", s)
	}
	return s
}

var sizeRE = regexp.MustCompile(`^([0-9]+)\s*([KkMmGg]i?[Bb]?|[Bb])?$`)

// size parses a byte count: a plain number, or with a K, M or G suffix
// (powers of 1024; "KiB", "MB" and "k" all mean the same here).
func (p *parser) size(n *yaml.Node, min int64) int64 {
	if !p.scalar(n, "a size") {
		return 0
	}
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(n.Value))
	if m == nil {
		p.errf(n, "bad size %q (use bytes or a K, M or G suffix, like 8M)", n.Value)
		return 0
	}
	v, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		p.errf(n, "bad size %q", n.Value)
		return 0
	}
	shift := 0
	if m[2] != "" {
		switch m[2][0] {
		case 'K', 'k':
			shift = 10
		case 'M', 'm':
			shift = 20
		case 'G', 'g':
			shift = 30
		}
	}
	if v > (1<<40)>>shift {
		p.errf(n, "size %q is too large", n.Value)
		return 0
	}
	v <<= shift
	if v < min {
		p.errf(n, "size %d is below the minimum %d", v, min)
	}
	return v
}

// listenAddr checks a host:port for metrics_listen. The host must be an IP
// literal (or empty for every address): a name would make the daemon's
// start depend on DNS, which may need the very uplink it is choosing.
func (p *parser) listenAddr(n *yaml.Node) string {
	s := p.str(n)
	if s == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		p.errf(n, "metrics_listen %q is not host:port (like 127.0.0.1:9343)", s)
		return s
	}
	if pn, err := strconv.Atoi(port); err != nil || pn < 1 || pn > 65535 {
		p.errf(n, "metrics_listen %q: port must be 1-65535", s)
	}
	if host != "" && net.ParseIP(host) == nil {
		p.errf(n, "metrics_listen %q: host must be an IP address (or empty for all)", s)
	}
	return s
}

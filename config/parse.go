package config

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with a config file, with its position.
type Problem struct {
	File      string
	Line, Col int
	Msg       string
}

func (p Problem) String() string { return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Col, p.Msg) }

// Problems is every problem found in a file; Parse reports all of them at
// once, so a user fixes a file in one round.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Load reads and parses a config file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

var (
	nameRE         = regexp.MustCompile(`^[a-z0-9_-]{1,15}$`)
	yamlLineErrRE  = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	reservedTables = map[int]string{0: "unspec", 253: "default", 254: "main", 255: "local"}
)

type parser struct {
	file         string
	problems     Problems
	wanPositions []wanPos
	balance      balancePos
}

func (p *parser) errf(n *yaml.Node, format string, args ...any) {
	line, col := 1, 1
	if n != nil {
		line, col = n.Line, n.Column
	}
	p.problems = append(p.problems, Problem{File: p.file, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)})
}

// Parse parses and validates a config. The error, if any, is Problems.
func Parse(file string, data []byte) (*Config, error) {
	p := &parser{file: file}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		line, msg := 1, err.Error()
		if m := yamlLineErrRE.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		p.problems = append(p.problems, Problem{File: file, Line: line, Col: 1, Msg: "YAML: " + msg})
		return nil, p.problems
	}
	c := &Config{
		ControlSocket:   DefaultControlSocket,
		StateDir:        DefaultStateDir,
		EventLogMaxSize: DefaultEventLogMaxSize,
		Hooks:           DefaultHooks(),
		Routing:         Routing{ActiveTable: DefaultActiveTable, RulePriority: DefaultRulePriority, MarkMask: DefaultMarkMask},
	}
	if len(doc.Content) == 0 {
		p.errf(&doc, "empty config: at least one WAN is needed under wans:")
		return nil, p.problems
	}
	root := doc.Content[0]
	var wansNode *yaml.Node
	p.mapping(root, "top level", map[string]func(k, v *yaml.Node){
		"control_socket":     func(_, v *yaml.Node) { c.ControlSocket = p.path(v) },
		"event_log":          func(_, v *yaml.Node) { c.EventLog = p.path(v) },
		"metrics_listen":     func(_, v *yaml.Node) { c.MetricsListen = p.listenAddr(v) },
		"state_dir":          func(_, v *yaml.Node) { c.StateDir = p.path(v) },
		"control_group":      func(_, v *yaml.Node) { c.ControlGroup = p.group(v) },
		"event_log_max_size": func(_, v *yaml.Node) { c.EventLogMaxSize = p.size(v, MinEventLogMaxSize) },
		"hooks":              func(_, v *yaml.Node) { c.Hooks = p.hooks(v) },
		"lan": func(_, v *yaml.Node) {
			for _, n := range p.seq(v) {
				c.LAN = append(c.LAN, p.str(n))
			}
		},
		"routing": func(_, v *yaml.Node) {
			p.mapping(v, "routing", map[string]func(k, v *yaml.Node){
				"active_table":  func(_, v *yaml.Node) { c.Routing.ActiveTable = p.table(v) },
				"rule_priority": func(_, v *yaml.Node) { c.Routing.RulePriority = p.intRange(v, 1, 32765-RulePriorityBlock) },
				"mark_mask":     func(_, v *yaml.Node) { c.Routing.MarkMask = p.mask(v) },
				"slots":         func(_, v *yaml.Node) { c.Routing.Slots = p.slots(v) },
				"slot_table":    func(_, v *yaml.Node) { c.Routing.SlotTable = p.slotTable(v) },
			})
		},
		"wans": func(_, v *yaml.Node) {
			wansNode = v
			for _, n := range p.seq(v) {
				c.WANs = append(c.WANs, p.wan(n))
			}
		},
	})
	if wansNode == nil {
		p.errf(root, "no wans: at least one WAN is needed")
	} else if len(c.WANs) == 0 {
		p.errf(wansNode, "wans is empty: at least one WAN is needed")
	}
	p.crossCheck(c, wansNode)
	p.checkBalance(c, wansNode)
	if len(p.problems) > 0 {
		sort.SliceStable(p.problems, func(i, j int) bool {
			a, b := p.problems[i], p.problems[j]
			return a.Line < b.Line || (a.Line == b.Line && a.Col < b.Col)
		})
		return nil, p.problems
	}
	return c, nil
}

// RulePriorityBlock is the number of rule priorities the daemon uses from
// routing.rule_priority on (kept in sync with reactor.RulePriorities).
const RulePriorityBlock = 300

// mapping walks a YAML mapping, calling the handler of each known key and
// reporting unknown and duplicate keys where they stand.
func (p *parser) mapping(n *yaml.Node, what string, keys map[string]func(k, v *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		p.errf(n, "%s must be a mapping (key: value), not %s", what, kindName(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		h, ok := keys[k.Value]
		switch {
		case !ok:
			p.errf(k, "unknown key %q in %s (known: %s)", k.Value, what, knownKeys(keys))
		case seen[k.Value]:
			p.errf(k, "duplicate key %q in %s", k.Value, what)
		default:
			seen[k.Value] = true
			h(k, v)
		}
	}
}

func knownKeys(keys map[string]func(k, v *yaml.Node)) string {
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	}
	return fmt.Sprintf("%q", n.Value)
}

func (p *parser) scalar(n *yaml.Node, want string) bool {
	if n.Kind != yaml.ScalarNode {
		p.errf(n, "expected %s, got %s", want, kindName(n))
		return false
	}
	return true
}

func (p *parser) str(n *yaml.Node) string {
	if !p.scalar(n, "a string") {
		return ""
	}
	return n.Value
}

func (p *parser) path(n *yaml.Node) string {
	s := p.str(n)
	if s != "" && !strings.HasPrefix(s, "/") {
		p.errf(n, "%q must be an absolute path", s)
	}
	return s
}

func (p *parser) seq(n *yaml.Node) []*yaml.Node {
	if n.Kind != yaml.SequenceNode {
		p.errf(n, "expected a list, got %s", kindName(n))
		return nil
	}
	return n.Content
}

func (p *parser) int(n *yaml.Node) (int, bool) {
	if !p.scalar(n, "an integer") {
		return 0, false
	}
	v, err := strconv.ParseInt(n.Value, 0, 64)
	if err != nil {
		p.errf(n, "expected an integer, got %q", n.Value)
		return 0, false
	}
	return int(v), true
}

func (p *parser) intRange(n *yaml.Node, lo, hi int) int {
	v, ok := p.int(n)
	if ok && (v < lo || v > hi) {
		p.errf(n, "%d is out of range [%d, %d]", v, lo, hi)
	}
	return v
}

func (p *parser) float(n *yaml.Node, lo, hi float64) float64 {
	if !p.scalar(n, "a number") {
		return 0
	}
	v, err := strconv.ParseFloat(n.Value, 64)
	if err != nil {
		p.errf(n, "expected a number, got %q", n.Value)
		return 0
	}
	if v < lo || v > hi {
		p.errf(n, "%g is out of range [%g, %g]", v, lo, hi)
	}
	return v
}

func (p *parser) boolean(n *yaml.Node) bool {
	if !p.scalar(n, "true or false") {
		return false
	}
	switch n.Value {
	case "true":
		return true
	case "false":
		return false
	}
	p.errf(n, "expected true or false, got %q", n.Value)
	return false
}

func (p *parser) table(n *yaml.Node) int {
	v, ok := p.int(n)
	if !ok {
		return 0
	}
	if name, reserved := reservedTables[v]; reserved {
		p.errf(n, "table %d is the kernel's %q table; pick another", v, name)
	} else if v < 1 || v > 1<<31-1 {
		p.errf(n, "table %d is out of range [1, 2147483647]", v)
	}
	return v
}

func (p *parser) mask(n *yaml.Node) uint32 {
	if !p.scalar(n, "an integer") {
		return 0
	}
	// Not p.int: on 32-bit routers (arm, mipsle) an int cannot hold a
	// mask above 0x7fffffff.
	v, err := strconv.ParseInt(n.Value, 0, 64)
	if err != nil {
		p.errf(n, "expected an integer, got %q", n.Value)
		return 0
	}
	if v <= 0 || v > 0xffffffff {
		p.errf(n, "mark_mask %#x must be a non-zero 32-bit mask", v)
		return 0
	}
	return uint32(v)
}

func (p *parser) duration(n *yaml.Node, min time.Duration) time.Duration {
	if !p.scalar(n, "a duration") {
		return 0
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil {
		p.errf(n, "bad duration %q (use Go durations like 250ms or 2s)", n.Value)
		return 0
	}
	if d < min {
		p.errf(n, "duration %s is below the minimum %s", d, min)
	}
	return d
}

func (p *parser) addr(n *yaml.Node) netip.Addr {
	s := p.str(n)
	if s == "" {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		p.errf(n, "%q is not an IPv4 address", s)
		return netip.Addr{}
	}
	return a
}

func (p *parser) prefix(n *yaml.Node) netip.Prefix {
	s := p.str(n)
	if s == "" {
		return netip.Prefix{}
	}
	pf, err := netip.ParsePrefix(s)
	if err != nil || !pf.Addr().Is4() {
		p.errf(n, "%q is not an IPv4 address with prefix length (like 203.0.113.2/24)", s)
		return netip.Prefix{}
	}
	return pf
}

// wanPos remembers where each WAN's keys stand, for cross-WAN checks.
type wanPos struct {
	node, name, iface, table *yaml.Node
}

func (p *parser) wan(n *yaml.Node) WAN {
	w := WAN{Priority: 1, Weight: 1}
	pos := wanPos{node: n}
	var addressingNode, addressNode, gatewayNode, probeNode *yaml.Node
	p.mapping(n, "wan", map[string]func(k, v *yaml.Node){
		"name": func(_, v *yaml.Node) {
			pos.name = v
			w.Name = p.str(v)
			if w.Name != "" && !nameRE.MatchString(w.Name) {
				p.errf(v, "WAN name %q must match [a-z0-9_-]{1,15}", w.Name)
			}
		},
		"interface": func(_, v *yaml.Node) {
			pos.iface = v
			w.Interface = p.str(v)
			if len(w.Interface) > 15 || strings.ContainsAny(w.Interface, "/ \t") {
				p.errf(v, "%q is not a valid interface name", w.Interface)
			}
		},
		"table":      func(_, v *yaml.Node) { pos.table = v; w.Table = p.table(v) },
		"priority":   func(_, v *yaml.Node) { w.Priority = p.intRange(v, 0, 1000000) },
		"weight":     func(_, v *yaml.Node) { w.Weight = p.intRange(v, 1, 1000) },
		"addressing": func(_, v *yaml.Node) { addressingNode = v; w.Addressing = p.str(v) },
		"address":    func(_, v *yaml.Node) { addressNode = v; w.Address = p.prefix(v) },
		"gateway":    func(_, v *yaml.Node) { gatewayNode = v; w.Gateway = p.addr(v) },
		"probe":      func(_, v *yaml.Node) { probeNode = v; w.Probe = p.probe(v) },
		"wifi":       func(_, v *yaml.Node) { w.Wifi = p.wifi(v) },
		"dhcp":       func(_, v *yaml.Node) { w.DHCPOptions = p.dhcp(v) },
		"nat":        func(_, v *yaml.Node) { w.NAT = p.boolean(v) },
	})
	if n.Kind != yaml.MappingNode {
		return w
	}
	if pos.name == nil {
		p.errf(n, "WAN without name")
	}
	if pos.iface == nil {
		p.errf(n, "WAN %q without interface", w.Name)
	}
	if pos.table == nil {
		p.errf(n, "WAN %q without table (its own routing table number)", w.Name)
	}
	switch w.Addressing {
	case Static:
		if addressNode == nil {
			p.errf(addressingNode, "WAN %q: addressing static needs address (like 203.0.113.2/24)", w.Name)
		}
		if gatewayNode == nil {
			p.errf(addressingNode, "WAN %q: addressing static needs gateway", w.Name)
		}
	case DHCP, External:
		if addressNode != nil {
			p.errf(addressNode, "WAN %q: address is only for addressing static (%s learns it)", w.Name, w.Addressing)
		}
		if w.Addressing == DHCP && gatewayNode != nil {
			p.errf(gatewayNode, "WAN %q: gateway comes from the DHCP lease with addressing dhcp", w.Name)
		}
	case "":
		if addressingNode == nil {
			p.errf(n, "WAN %q without addressing (static, dhcp or external)", w.Name)
		}
	default:
		p.errf(addressingNode, "addressing %q is not one of static, dhcp, external", w.Addressing)
	}
	if w.DHCPOptions != nil && w.Addressing != DHCP {
		p.errf(n, "WAN %q: a dhcp: section needs addressing dhcp", w.Name)
	}
	if probeNode == nil {
		p.errf(n, "WAN %q without probe (probe: targets: [...])", w.Name)
	}
	p.wanPositions = append(p.wanPositions, pos)
	return w
}

func (p *parser) probe(n *yaml.Node) Probe {
	pr := Probe{
		Interval: DefaultInterval, Timeout: DefaultTimeout, UpAfter: DefaultUpAfter, Window: DefaultWindow,
		DegradedLoss: DefaultDegradedLoss, RecoverLoss: DefaultRecoverLoss,
	}
	var targetsNode *yaml.Node
	p.mapping(n, "probe", map[string]func(k, v *yaml.Node){
		"targets": func(_, v *yaml.Node) {
			targetsNode = v
			for _, t := range p.seq(v) {
				a := p.addr(t)
				if a.IsValid() && containsAddr(pr.Targets, a) {
					p.errf(t, "duplicate target %s", a)
				}
				if a.IsValid() {
					pr.Targets = append(pr.Targets, a)
				}
			}
		},
		"interval":      func(_, v *yaml.Node) { pr.Interval = p.duration(v, 10*time.Millisecond) },
		"timeout":       func(_, v *yaml.Node) { pr.Timeout = p.duration(v, 10*time.Millisecond) },
		"down_after":    func(_, v *yaml.Node) { pr.DownAfter = p.intRange(v, 1, 1000) },
		"up_after":      func(_, v *yaml.Node) { pr.UpAfter = p.intRange(v, 1, 1000) },
		"window":        func(_, v *yaml.Node) { pr.Window = p.intRange(v, 10, 10000) },
		"degraded_loss": func(_, v *yaml.Node) { pr.DegradedLoss = p.float(v, 0, 100) },
		"recover_loss":  func(_, v *yaml.Node) { pr.RecoverLoss = p.float(v, 0, 100) },
		"degraded_rtt":  func(_, v *yaml.Node) { pr.DegradedRTT = p.duration(v, time.Millisecond) },
	})
	switch {
	case n.Kind != yaml.MappingNode:
	case targetsNode == nil:
		p.errf(n, "probe needs targets (IPv4 addresses reached through this WAN)")
	case targetsNode.Kind == yaml.SequenceNode && len(targetsNode.Content) == 0:
		p.errf(targetsNode, "probe needs at least one target")
	}
	if pr.RecoverLoss > pr.DegradedLoss {
		p.errf(n, "recover_loss (%g) must not exceed degraded_loss (%g)", pr.RecoverLoss, pr.DegradedLoss)
	}
	return pr
}

func containsAddr(as []netip.Addr, a netip.Addr) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

func (p *parser) wifi(n *yaml.Node) *Wifi {
	w := &Wifi{Hysteresis: DefaultHysteresis}
	var minNode *yaml.Node
	p.mapping(n, "wifi", map[string]func(k, v *yaml.Node){
		"min_signal": func(_, v *yaml.Node) { minNode = v; w.MinSignal = p.intRange(v, -120, -1) },
		"hysteresis": func(_, v *yaml.Node) { w.Hysteresis = p.intRange(v, 0, 30) },
	})
	if n.Kind == yaml.MappingNode && minNode == nil {
		p.errf(n, "wifi needs min_signal (dBm, e.g. -75)")
	}
	return w
}

func (p *parser) dhcp(n *yaml.Node) *DHCPOptions {
	d := &DHCPOptions{}
	p.mapping(n, "dhcp", map[string]func(k, v *yaml.Node){
		"hostname":  func(_, v *yaml.Node) { d.Hostname = p.str(v) },
		"client_id": func(_, v *yaml.Node) { d.ClientID = p.str(v) },
		"release":   func(_, v *yaml.Node) { d.Release = p.boolean(v) },
	})
	return d
}

// crossCheck finds what no single WAN can see: duplicates across WANs.
func (p *parser) crossCheck(c *Config, wansNode *yaml.Node) {
	names, ifaces, tables := map[string]bool{}, map[string]bool{}, map[int]bool{}
	for i, w := range c.WANs {
		if i >= len(p.wanPositions) {
			break
		}
		pos := p.wanPositions[i]
		if w.Name != "" {
			if names[w.Name] {
				p.errf(pos.name, "duplicate WAN name %q", w.Name)
			}
			names[w.Name] = true
		}
		if w.Interface != "" {
			if ifaces[w.Interface] {
				p.errf(pos.iface, "interface %q is already used by another WAN", w.Interface)
			}
			ifaces[w.Interface] = true
		}
		if w.Table != 0 {
			if tables[w.Table] {
				p.errf(pos.table, "duplicate table %d: every WAN needs its own", w.Table)
			}
			if w.Table == c.Routing.ActiveTable {
				p.errf(pos.table, "table %d is routing.active_table; pick another", w.Table)
			}
			tables[w.Table] = true
		}
	}
	if c.Routing.MarkMask != 0 && len(c.WANs) > 0 {
		// WAN i gets mark i+1 in the mask's bits: the mask must hold
		// the largest.
		bits := 0
		for m := c.Routing.MarkMask; m != 0; m >>= 1 {
			if m&1 == 1 {
				bits++
			}
		}
		if bits < 32 && len(c.WANs) >= 1<<bits {
			p.errf(wansNode, "routing.mark_mask %#x has room for %d WANs, not %d", c.Routing.MarkMask, 1<<bits-1, len(c.WANs))
		}
		if !contiguous(c.Routing.MarkMask) {
			p.errf(wansNode, "routing.mark_mask %#x must be one contiguous run of bits", c.Routing.MarkMask)
		}
	}
}

func contiguous(m uint32) bool {
	for m&1 == 0 {
		m >>= 1
	}
	return m&(m+1) == 0
}

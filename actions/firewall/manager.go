package firewall

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultCheckPeriod is how often Run compares the kernel's chains with the
// generated ones. A check forks iptables-save once per table, so it is kept
// well away from anything time-critical.
const DefaultCheckPeriod = 5 * time.Second

// commandTimeout bounds one iptables-save or iptables-restore run.
const commandTimeout = 20 * time.Second

// tables are the iptables tables the daemon may have chains in, in the
// order they are checked and written.
var tables = []string{"mangle", "nat"}

// Options configures a Manager (and Remove).
type Options struct {
	// Wrap is prepended to every command, e.g. {"ip", "netns", "exec",
	// "x"} to work inside another network namespace. Empty runs the
	// commands directly, in the daemon's own namespace.
	Wrap []string
	// Save and Restore name the iptables-save and iptables-restore
	// binaries (either flavour, nft or legacy); empty looks them up in
	// PATH and then in /usr/sbin and /sbin.
	Save, Restore string
	// Period between checks in Run; 0 means DefaultCheckPeriod.
	Period time.Duration
	// Logger receives what was written; nil discards.
	Logger *slog.Logger
}

// Result describes one sync: whether anything was written and why.
type Result struct {
	// Changed lists the tables rewritten.
	Changed []string
	// Reasons says, per rewritten table, what differed (for the log).
	Reasons []string
	// Lines is the number of rules written (or removed, for Remove).
	Lines    int
	Duration time.Duration
}

// Manager keeps the daemon's chains as generated from the latest Spec.
type Manager struct {
	opts Options
	log  *slog.Logger

	mu   sync.Mutex // serialises syncs and guards the fields below
	want Ruleset
	have bool
	// printed holds, per table, what iptables-save printed for our chains
	// right after we wrote them when that differed from the generated
	// text (an iptables version that formats a match differently): later
	// checks compare with it instead, so the difference does not cause a
	// rewrite every period. Reset whenever the Spec changes.
	printed map[string]tableState
	// warned remembers the tables whose format mismatch was logged.
	warned map[string]bool

	// pending is the Spec handed to Set for Run to apply; wake has room
	// for one signal so that Set never blocks.
	pendMu  sync.Mutex
	pending *Spec
	wake    chan struct{}
}

// New returns a Manager; nothing is written before Apply.
func New(o Options) *Manager {
	if o.Period <= 0 {
		o.Period = DefaultCheckPeriod
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{opts: o, log: log, printed: map[string]tableState{}, warned: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// Set hands a new Spec to Run without blocking, for callers that must not
// wait for iptables (the reactor goroutine on a config reload). Run applies
// the latest one at once.
func (m *Manager) Set(spec Spec) {
	m.pendMu.Lock()
	m.pending = &spec
	m.pendMu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Apply makes spec the desired firewall and syncs the kernel to it: nothing
// is written when the chains already match (a restart adopts what the
// previous run installed).
func (m *Manager) Apply(spec Spec) (Result, error) {
	rs, err := spec.Ruleset()
	if err != nil {
		return Result{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.have || !equalRulesets(rs, m.want) {
		m.printed = map[string]tableState{}
		m.warned = map[string]bool{}
	}
	m.want, m.have = rs, true
	return m.sync()
}

// Check compares the kernel with the desired chains and repairs what
// differs (someone flushed or edited them). Before the first Apply it does
// nothing.
func (m *Manager) Check() (Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.have {
		return Result{}, nil
	}
	return m.sync()
}

// Run applies what Set hands over and checks every Period, until ctx is
// done. report (may be nil) receives the outcome of every pass that wrote
// something or failed.
func (m *Manager) Run(ctx context.Context, report func(Result, error)) error {
	t := time.NewTicker(m.opts.Period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-m.wake:
		}
		m.pendMu.Lock()
		spec := m.pending
		m.pending = nil
		m.pendMu.Unlock()
		var (
			res Result
			err error
		)
		if spec != nil {
			res, err = m.Apply(*spec)
		} else {
			res, err = m.Check()
		}
		if err != nil {
			m.log.Error("firewall pass failed", "err", err)
		}
		if report != nil && (err != nil || len(res.Changed) > 0) {
			report(res, err)
		}
	}
}

// sync writes, per table, the difference between the kernel and m.want in
// one iptables-restore transaction. Called with m.mu held.
func (m *Manager) sync() (Result, error) {
	start := time.Now()
	var res Result
	var errs []error
	for _, name := range tables {
		want := m.want.Table(name)
		cur, err := m.read(name)
		if (errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist)) && len(want.Chains) == 0 {
			// No iptables and nothing wanted: there is nothing of ours
			// to remove either (a router without iptables never had
			// our chains), so a config without balancing or NAT works
			// on such a system without complaint.
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		expected := stateOf(want)
		if p, ok := m.printed[name]; ok {
			expected = p
		}
		why := cur.differs(expected, want)
		if why == "" {
			continue
		}
		script, lines := restoreScript(want, cur)
		if err := m.restore(script); err != nil {
			errs = append(errs, fmt.Errorf("table %s: %w", name, err))
			continue
		}
		res.Changed = append(res.Changed, name)
		res.Reasons = append(res.Reasons, name+": "+why)
		res.Lines += lines
		m.log.Info("firewall written", "table", name, "reason", why, "rules", lines)
		// Read back: if iptables prints our rules differently from how
		// they were generated, remember its version.
		after, err := m.read(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if after.differs(stateOf(want), want) != "" {
			m.printed[name] = after.ours()
			if !m.warned[name] {
				m.warned[name] = true
				m.log.Warn("iptables prints the firewall differently from how it was written; comparing with its version from now on",
					"table", name, "difference", after.differs(stateOf(want), want))
			}
		}
	}
	res.Duration = time.Since(start)
	return res, errors.Join(errs...)
}

// Remove deletes every WANREACT_* chain in mangle and nat and every rule
// that jumps to one (`wanreact cleanup`). report, if not nil, gets a line per
// removed chain or jump, like "iptables mangle chain WANREACT_PRE (8
// rules)". Tables without anything of ours are not written, and a system
// without iptables has nothing to remove.
func Remove(o Options, report func(string)) error {
	if report == nil {
		report = func(string) {}
	}
	m := New(o)
	var errs []error
	for _, name := range tables {
		cur, err := m.read(name)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(cur.chains) == 0 && len(cur.refs) == 0 {
			continue
		}
		script, _ := restoreScript(Table{Name: name}, cur)
		if err := m.restore(script); err != nil {
			errs = append(errs, fmt.Errorf("table %s: %w", name, err))
			continue
		}
		for _, r := range cur.refs {
			report(fmt.Sprintf("removed iptables %s rule %s", name, r))
		}
		for _, c := range cur.order {
			report(fmt.Sprintf("removed iptables %s chain %s (%d rules)", name, c, len(cur.chains[c])))
		}
	}
	return errors.Join(errs...)
}

// tableState is our part of one table as iptables-save printed it.
type tableState struct {
	// chains maps each WANREACT_* chain to its rules (text after
	// "-A <chain> "); order lists them as they appeared.
	chains map[string][]string
	order  []string
	// refs are the full rules ("-A CHAIN ...") of chains not ours that
	// jump or go to one of ours.
	refs []string
}

// stateOf is what iptables-save should print for a generated table.
func stateOf(t Table) tableState {
	s := tableState{chains: map[string][]string{}}
	for _, c := range t.Chains {
		s.chains[c.Name] = slices.Clone(c.Rules)
		s.order = append(s.order, c.Name)
	}
	for _, j := range t.Jumps {
		s.refs = append(s.refs, j.Rule())
	}
	return s
}

// ours is the state without refs, for m.printed (jumps are compared with
// the generated text, which iptables has never printed differently).
func (s tableState) ours() tableState {
	return tableState{chains: s.chains, order: s.order, refs: nil}
}

// differs explains how the kernel state s differs from expected (for our
// chains) and from want's jumps, or returns "" when it does not.
func (s tableState) differs(expected tableState, want Table) string {
	var why []string
	for _, name := range expected.order {
		got, ok := s.chains[name]
		switch {
		case !ok:
			why = append(why, "chain "+name+" missing")
		case !slices.Equal(got, expected.chains[name]):
			why = append(why, fmt.Sprintf("chain %s differs (%d rules for %d expected, %d positions differ)",
				name, len(got), len(expected.chains[name]), countDiff(got, expected.chains[name])))
		}
	}
	for _, name := range s.order {
		if _, ok := expected.chains[name]; !ok {
			why = append(why, "stale chain "+name)
		}
	}
	wantJumps := map[string]bool{}
	for _, j := range want.Jumps {
		wantJumps[j.Rule()] = true
		if n := count(s.refs, j.Rule()); n != 1 {
			why = append(why, fmt.Sprintf("%d jumps %q", n, j.Rule()))
		}
	}
	for _, r := range s.refs {
		if !wantJumps[r] {
			why = append(why, fmt.Sprintf("stray jump %q", r))
		}
	}
	return strings.Join(why, "; ")
}

func count(xs []string, x string) int {
	n := 0
	for _, y := range xs {
		if y == x {
			n++
		}
	}
	return n
}

func countDiff(a, b []string) int {
	n := max(len(a), len(b))
	same := 0
	for i := range min(len(a), len(b)) {
		if a[i] == b[i] {
			same++
		}
	}
	return n - same
}

// parseSave extracts our chains and the jumps into them from the output of
// `iptables-save -t <table>`.
func parseSave(out []byte) tableState {
	s := tableState{chains: map[string][]string{}}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, ":"+ChainPrefix):
			name, _, _ := strings.Cut(line[1:], " ")
			if _, dup := s.chains[name]; !dup {
				s.chains[name] = nil
				s.order = append(s.order, name)
			}
		case strings.HasPrefix(line, "-A "):
			chain, rule, _ := strings.Cut(line[3:], " ")
			if strings.HasPrefix(chain, ChainPrefix) {
				if _, ok := s.chains[chain]; !ok {
					s.order = append(s.order, chain)
				}
				s.chains[chain] = append(s.chains[chain], rule)
				continue
			}
			if targetsOurs(rule) {
				s.refs = append(s.refs, line)
			}
		}
	}
	return s
}

// targetsOurs reports whether a rule's target (-j or -g) is one of our
// chains.
func targetsOurs(rule string) bool {
	f := strings.Fields(rule)
	for i := 0; i+1 < len(f); i++ {
		if (f[i] == "-j" || f[i] == "-g" || f[i] == "--jump" || f[i] == "--goto") && strings.HasPrefix(f[i+1], ChainPrefix) {
			return true
		}
	}
	return false
}

// restoreScript is the iptables-restore --noflush input that turns cur into
// want for one table, as a single transaction: every chain of want is
// declared (which creates it or flushes it) and refilled; missing jumps
// are added, duplicate and stray ones deleted; chains of ours that want
// lacks are flushed and deleted after everything pointing at them is gone.
// It returns the script and the number of rules it writes or deletes.
func restoreScript(want Table, cur tableState) ([]byte, int) {
	var b strings.Builder
	lines := 0
	fmt.Fprintf(&b, "*%s\n", want.Name)
	wanted := map[string]bool{}
	for _, c := range want.Chains {
		wanted[c.Name] = true
		fmt.Fprintf(&b, ":%s - [0:0]\n", c.Name)
	}
	// Deletions of jumps first: a stale chain can only go once nothing
	// refers to it.
	wantJumps := map[string]Jump{}
	for _, j := range want.Jumps {
		wantJumps[j.Rule()] = j
	}
	seen := map[string]int{}
	for _, r := range cur.refs {
		seen[r]++
		if _, ok := wantJumps[r]; ok && seen[r] == 1 {
			continue // keep exactly one
		}
		// "-A CHAIN spec" deletes as "-D CHAIN spec".
		fmt.Fprintf(&b, "-D %s\n", strings.TrimPrefix(r, "-A "))
		lines++
	}
	for _, c := range want.Chains {
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "-A %s %s\n", c.Name, r)
			lines++
		}
	}
	for _, j := range want.Jumps {
		if seen[j.Rule()] > 0 {
			continue
		}
		if j.First {
			fmt.Fprintf(&b, "-I %s 1 -j %s\n", j.From, j.To)
		} else {
			fmt.Fprintf(&b, "-A %s -j %s\n", j.From, j.To)
		}
		lines++
	}
	var stale []string
	for _, name := range cur.order {
		if !wanted[name] {
			stale = append(stale, name)
		}
	}
	// Flush all before deleting any: stale chains may jump to each other.
	for _, name := range stale {
		fmt.Fprintf(&b, "-F %s\n", name)
		lines += len(cur.chains[name])
	}
	for _, name := range stale {
		fmt.Fprintf(&b, "-X %s\n", name)
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String()), lines
}

func (m *Manager) read(table string) (tableState, error) {
	out, err := m.run(nil, m.binary(m.opts.Save, "iptables-save"), "-t", table)
	if err != nil {
		return tableState{}, fmt.Errorf("iptables-save -t %s: %w", table, err)
	}
	return parseSave(out), nil
}

func (m *Manager) restore(script []byte) error {
	if _, err := m.run(script, m.binary(m.opts.Restore, "iptables-restore"), "-w", "5", "--noflush"); err != nil {
		return fmt.Errorf("iptables-restore: %w", err)
	}
	return nil
}

// binary resolves an iptables tool: the configured path, else PATH, else
// the sbin directories a daemon started with a minimal PATH may miss.
func (m *Manager) binary(configured, name string) string {
	if configured != "" {
		return configured
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin/", "/sbin/"} {
		if p, err := exec.LookPath(dir + name); err == nil {
			return p
		}
	}
	return name // the error then names the tool
}

func (m *Manager) run(stdin []byte, name string, args ...string) ([]byte, error) {
	argv := append(slices.Clone(m.opts.Wrap), name)
	argv = append(argv, args...)
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

func equalRulesets(a, b Ruleset) bool {
	if len(a.Tables) != len(b.Tables) {
		return false
	}
	for i := range a.Tables {
		ta, tb := a.Tables[i], b.Tables[i]
		if ta.Name != tb.Name || !slices.Equal(ta.Jumps, tb.Jumps) ||
			!slices.EqualFunc(ta.Chains, tb.Chains, func(x, y Chain) bool { return x.Name == y.Name && slices.Equal(x.Rules, y.Rules) }) {
			return false
		}
	}
	return true
}

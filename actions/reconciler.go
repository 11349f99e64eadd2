package actions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wanreact/wanreact/reactor"
)

// DefaultPeriod is how often Run re-checks the kernel without being asked.
const DefaultPeriod = time.Second

// retryPeriod replaces the period after a pass that had errors, so a
// transient failure (a link that was just re-created) is retried soon.
const retryPeriod = 250 * time.Millisecond

// Options configures a Reconciler.
type Options struct {
	// NetNS is the network namespace to write into; 0 or -1 (netns.None())
	// means the namespace of the calling thread at NewReconciler time.
	// The handle must stay open while the Reconciler is used.
	NetNS netns.NsHandle
	// Logger receives what changed; nil discards.
	Logger *slog.Logger
	// Now is the clock for Result.Duration; nil means time.Now.
	Now func() time.Time
	// Period between unsolicited passes of Run; 0 means DefaultPeriod.
	Period time.Duration
	// Slots are the balancing slot tables and rules to maintain (see
	// SetSlots); the zero value means no balancing.
	Slots SlotConfig
}

// Result describes one reconciliation pass. Strings are human-readable, in
// `ip` syntax, e.g. "rule 10100 fwmark 0x100/0xff00 lookup 10".
type Result struct {
	Added   []string
	Removed []string
	// Replaced lists routes changed in place (one RTM_NEWROUTE with
	// NLM_F_REPLACE) as "old => new".
	Replaced []string
	// Foreign lists routes of another protocol found in the daemon's
	// tables. They are never touched.
	Foreign  []string
	Errors   []error
	Duration time.Duration
}

// Changed reports whether the pass modified the kernel.
func (r Result) Changed() bool {
	return len(r.Added)+len(r.Removed)+len(r.Replaced) > 0
}

// Reconciler keeps the kernel's routing equal to the latest Desired.
type Reconciler struct {
	ns     netns.NsHandle
	h      *netlink.Handle
	addrs  *addrConn
	log    *slog.Logger
	now    func() time.Time
	period time.Duration

	// wake has room for one signal: Set and Kick never block, and any
	// number of them before Run looks collapse into one pass.
	wake    chan struct{}
	mu      sync.Mutex // guards the fields up to applyMu
	pending *reactor.Desired
	slots   SlotConfig
	// gen counts the Desired values handed to Set; applied is the gen of
	// the last one a pass of Run has applied, and passDone is closed (and
	// replaced) whenever applied moves, to wake WaitApplied.
	gen, pendingGen, applied uint64
	passDone                 chan struct{}

	// applyMu serialises passes (Run and direct ReconcileOnce calls) and
	// guards the state below.
	applyMu sync.Mutex
	// sysctlIndex remembers, per interface name, the ifindex whose sysctls
	// were written; a different index means the interface reappeared.
	sysctlIndex map[string]int
	// managed remembers every address this process desired per interface,
	// so that it can remove them later even on kernels without IFA_PROTO.
	managed map[string]map[netip.Prefix]bool
	// lastProblems is the text of the previous pass's errors and foreign
	// routes, to log them only when they change.
	lastProblems string
}

// NewReconciler opens netlink sockets in o.NetNS.
func NewReconciler(o Options) (*Reconciler, error) {
	ns := o.NetNS
	if ns == 0 {
		// The zero value means "current"; NsHandle(0) would be stdin.
		ns = netns.None()
	}
	var (
		h   *netlink.Handle
		err error
	)
	if ns.IsOpen() {
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	ac, err := newAddrConn(ns)
	if err != nil {
		h.Close()
		return nil, err
	}
	r := &Reconciler{
		ns: ns, h: h, addrs: ac,
		log:         o.Logger,
		now:         o.Now,
		period:      o.Period,
		wake:        make(chan struct{}, 1),
		slots:       o.Slots,
		passDone:    make(chan struct{}),
		sysctlIndex: map[string]int{},
		managed:     map[string]map[netip.Prefix]bool{},
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.period <= 0 {
		r.period = DefaultPeriod
	}
	return r, nil
}

// Close releases the sockets. It never changes the kernel: routing stays as
// it is when the daemon stops.
func (r *Reconciler) Close() error {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	r.h.Close()
	r.addrs.close()
	return nil
}

// Set hands a new Desired to Run without blocking; only the latest one
// handed before Run picks it up is applied.
func (r *Reconciler) Set(d reactor.Desired) {
	c := cloneDesired(d)
	r.mu.Lock()
	r.pending = &c
	r.gen++
	r.pendingGen = r.gen
	r.mu.Unlock()
	r.signal()
}

// SetSlots changes the balancing slots (on a config reload) and asks for a
// pass. The next pass of Run or ReconcileOnce uses them.
func (r *Reconciler) SetSlots(s SlotConfig) {
	r.mu.Lock()
	r.slots = s
	r.mu.Unlock()
	r.signal()
}

// Generation is the number of Desired values handed to Set so far.
func (r *Reconciler) Generation() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gen
}

// WaitApplied waits until Run has finished a pass over the Desired of
// generation gen or a later one (errors in the pass do not matter), or ctx
// ends. A conntrack flush uses it to run only after traffic has been
// re-routed: flushing first would let the next packet of a flushed flow
// create its entry, and pin it, along the old route.
func (r *Reconciler) WaitApplied(ctx context.Context, gen uint64) error {
	for {
		r.mu.Lock()
		applied, done := r.applied, r.passDone
		r.mu.Unlock()
		if applied >= gen {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
		}
	}
}

// Kick asks Run for a pass soon, e.g. because one of our rules was deleted.
func (r *Reconciler) Kick() { r.signal() }

func (r *Reconciler) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run applies the latest Desired whenever Set or Kick is called and every
// Period, until ctx is done. Nothing is applied before the first Set. report
// (may be nil) receives every pass's result, including the ones that
// changed nothing. Run returns nil when ctx ends; it never removes anything.
func (r *Reconciler) Run(ctx context.Context, report func(Result)) error {
	var (
		cur    reactor.Desired
		curGen uint64
		have   bool
	)
	timer := time.NewTimer(r.period)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-timer.C:
		}
		r.mu.Lock()
		if r.pending != nil {
			cur, curGen, have, r.pending = *r.pending, r.pendingGen, true, nil
		}
		r.mu.Unlock()
		next := r.period
		if have {
			res, err := r.ReconcileOnce(cur)
			if err != nil {
				res.Errors = append(res.Errors, err)
			}
			r.markApplied(curGen)
			if len(res.Errors) > 0 {
				next = min(next, retryPeriod)
			}
			if report != nil {
				report(res)
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// ReconcileOnce makes the kernel match d now. Partial failures are listed in
// Result.Errors and the rest is still applied; the error return is for
// failures that prevented the pass (the kernel could not be read).
func (r *Reconciler) ReconcileOnce(d reactor.Desired) (Result, error) {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	start := r.now()
	var res Result
	err := r.reconcile(d, &res)
	res.Duration = r.now().Sub(start)
	r.logResult(res, err)
	return res, err
}

func (r *Reconciler) markApplied(gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if gen > r.applied {
		r.applied = gen
		close(r.passDone)
		r.passDone = make(chan struct{})
	}
}

func (r *Reconciler) reconcile(d reactor.Desired, res *Result) error {
	// Removing a stale primary address also removes the secondaries of its
	// subnet when promote_secondaries is off (it is set on WANs, but may
	// have failed or been reset), taking the new address and the routes
	// using it along. One more pass puts them back at once.
	var err error
	for range 2 {
		var removed int
		removed, err = r.pass(d, res)
		if err != nil || removed == 0 {
			break
		}
	}
	// A second pass re-reports the same plan errors and foreign routes.
	res.Errors = uniqueErrors(res.Errors)
	slices.Sort(res.Foreign)
	res.Foreign = slices.Compact(res.Foreign)
	return err
}

func uniqueErrors(errs []error) []error {
	seen := map[string]bool{}
	out := errs[:0]
	for _, e := range errs {
		if !seen[e.Error()] {
			seen[e.Error()] = true
			out = append(out, e)
		}
	}
	return out
}

// pass is one diff-and-apply round; it returns how many stale addresses it
// removed.
func (r *Reconciler) pass(d reactor.Desired, res *Result) (int, error) {
	links, names := r.resolveLinks(d, res)

	// Addresses first: a route's src must already be a local address.
	stale := r.ensureAddresses(d, links, res)
	r.ensureSysctls(d, links, res)

	r.mu.Lock()
	slots := r.slots
	r.mu.Unlock()
	want, errs := plan(d, links, slots)
	res.Errors = append(res.Errors, errs...)

	rules, err := r.ruleList()
	if err != nil {
		return 0, err
	}
	routes, err := r.routeList(names)
	if err != nil {
		return 0, err
	}
	rd := diffRules(want.Rules, rules)
	dd := diffRoutes(want, routes)

	for _, op := range dd.Set {
		if err := r.h.RouteReplace(op.Spec.toKernel()); err != nil {
			res.Errors = append(res.Errors, fmt.Errorf("%s: %w", op.Spec, err))
			continue
		}
		if op.Old != nil {
			res.Replaced = append(res.Replaced, op.Old.String()+" => "+op.Spec.String())
		} else {
			res.Added = append(res.Added, op.Spec.String())
		}
	}
	for _, b := range dd.Blocked {
		res.Errors = append(res.Errors, fmt.Errorf("%s: blocked by a route of another protocol with the same destination and metric", b))
	}
	for _, f := range dd.Foreign {
		res.Foreign = append(res.Foreign, f.String())
	}
	for _, rule := range rd.Add {
		if err := r.h.RuleAdd(rule.toKernel()); err != nil {
			res.Errors = append(res.Errors, fmt.Errorf("add %s: %w", rule, err))
			continue
		}
		res.Added = append(res.Added, rule.String())
	}
	for _, rule := range rd.Del {
		if err := r.h.RuleDel(rule.toKernel()); err != nil && !errors.Is(err, unix.ENOENT) {
			res.Errors = append(res.Errors, fmt.Errorf("delete %s: %w", rule, err))
			continue
		}
		res.Removed = append(res.Removed, rule.String())
	}
	for _, rt := range dd.Del {
		if err := r.h.RouteDel(rt.toKernel()); err != nil && !errors.Is(err, unix.ESRCH) {
			res.Errors = append(res.Errors, fmt.Errorf("delete %s: %w", rt, err))
			continue
		}
		res.Removed = append(res.Removed, rt.String())
	}
	// Old addresses last, so routes already use the new source address
	// when the kernel flushes the routes that used the old one.
	return r.removeAddresses(stale, res), nil
}

// resolveLinks looks up every WAN interface by name. The ifindex in Desired
// is not trusted because an interface may have been re-created since.
func (r *Reconciler) resolveLinks(d reactor.Desired, res *Result) (map[string]linkState, map[int]string) {
	links := map[string]linkState{}
	names := map[int]string{}
	for _, w := range d.WANs {
		if _, done := links[w.Interface]; done || w.Interface == "" {
			continue
		}
		l, err := r.h.LinkByName(w.Interface)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if !errors.As(err, &nf) {
				res.Errors = append(res.Errors, fmt.Errorf("look up interface %s: %w", w.Interface, err))
			}
			links[w.Interface] = linkState{}
			continue
		}
		a := l.Attrs()
		links[w.Interface] = linkState{Index: a.Index, Up: a.Flags&net.FlagUp != 0}
		names[a.Index] = w.Interface
	}
	return links, names
}

// managedAddr is an address to remove at the end of a pass.
type managedAddr struct {
	ifname string
	addr   kernelAddr
}

// ensureAddresses brings managed links up and puts their address on them. It
// returns the stale addresses to remove once routes have moved on.
func (r *Reconciler) ensureAddresses(d reactor.Desired, links map[string]linkState, res *Result) []managedAddr {
	var managedWANs []reactor.WANRouting
	for _, w := range d.WANs {
		if w.ManageAddress && links[w.Interface].Index != 0 {
			managedWANs = append(managedWANs, w)
		}
	}
	if len(managedWANs) == 0 {
		return nil
	}
	all, err := r.addrs.list()
	if err != nil {
		res.Errors = append(res.Errors, err)
		return nil
	}
	var stale []managedAddr
	for _, w := range managedWANs {
		link := links[w.Interface]
		if !link.Up {
			if err := r.h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: link.Index}}); err != nil {
				res.Errors = append(res.Errors, fmt.Errorf("set %s up: %w", w.Interface, err))
			} else {
				res.Added = append(res.Added, "link "+w.Interface+" up")
			}
		}
		want := w.Address
		valid := want.IsValid() && want.Addr().Is4()
		if want.IsValid() && !valid {
			res.Errors = append(res.Errors, fmt.Errorf("wan %s: address %s is not IPv4", w.Name, want))
		}
		if valid {
			if r.managed[w.Interface] == nil {
				r.managed[w.Interface] = map[netip.Prefix]bool{}
			}
			r.managed[w.Interface][want] = true
		}
		present := false
		for _, a := range all {
			if a.Index != link.Index {
				continue
			}
			if valid && a.Prefix == want {
				if a.Flags&unix.IFA_F_NOPREFIXROUTE == 0 {
					// The kernel cannot change the flags of an IPv4
					// address in place: delete and add it back.
					if err := r.addrs.del(link.Index, a.Prefix); err != nil {
						res.Errors = append(res.Errors, err)
						present = true // leave it working rather than retry blindly
						continue
					}
					res.Removed = append(res.Removed, fmt.Sprintf("address %s dev %s (without noprefixroute)", a.Prefix, w.Interface))
					continue
				}
				present = true
				continue
			}
			if a.Proto == Proto || r.managed[w.Interface][a.Prefix] {
				stale = append(stale, managedAddr{ifname: w.Interface, addr: a})
			}
		}
		if valid && !present {
			if err := r.addrs.add(link.Index, want); err != nil {
				res.Errors = append(res.Errors, err)
			} else {
				res.Added = append(res.Added, fmt.Sprintf("address %s dev %s noprefixroute", want, w.Interface))
			}
		}
	}
	return stale
}

func (r *Reconciler) removeAddresses(stale []managedAddr, res *Result) int {
	n := 0
	for _, s := range stale {
		err := r.addrs.del(s.addr.Index, s.addr.Prefix)
		if errors.Is(err, unix.EADDRNOTAVAIL) {
			continue // already gone, e.g. with the primary of its subnet
		}
		if err != nil {
			res.Errors = append(res.Errors, err)
			continue
		}
		n++
		res.Removed = append(res.Removed, fmt.Sprintf("address %s dev %s", s.addr.Prefix, s.ifname))
	}
	return n
}

// ensureSysctls writes the WAN sysctls on interfaces seen for the first time
// or with a new ifindex (re-created).
func (r *Reconciler) ensureSysctls(d reactor.Desired, links map[string]linkState, res *Result) {
	for name, l := range links {
		if l.Index == 0 {
			delete(r.sysctlIndex, name)
			continue
		}
		if r.sysctlIndex[name] == l.Index {
			continue
		}
		done, err := writeWANSysctls(r.ns, name)
		res.Added = append(res.Added, done...)
		if err != nil {
			res.Errors = append(res.Errors, err)
			continue // retried next pass
		}
		r.sysctlIndex[name] = l.Index
	}
	// Forget interfaces that are no longer WANs, so that they get their
	// sysctls again if they become WANs again.
	for name := range r.sysctlIndex {
		if _, ok := links[name]; !ok {
			delete(r.sysctlIndex, name)
		}
	}
}

// ruleList dumps the IPv4 rules that carry our protocol.
func (r *Reconciler) ruleList() ([]ruleSpec, error) {
	ks, err := listRules(r.h)
	if err != nil {
		return nil, err
	}
	out := make([]ruleSpec, 0, len(ks))
	for _, k := range ks {
		if k.Protocol == Proto {
			out = append(out, ruleFromKernel(k))
		}
	}
	return out, nil
}

// routeList dumps the IPv4 routes of every table.
func (r *Reconciler) routeList(names map[int]string) ([]routeSpec, error) {
	ks, err := listRoutes(r.h)
	if err != nil {
		return nil, err
	}
	out := make([]routeSpec, 0, len(ks))
	for _, k := range ks {
		out = append(out, routeFromKernel(k, names))
	}
	return out, nil
}

// listRules and listRoutes retry a dump interrupted by a concurrent change:
// an interrupted dump may miss objects, which would look like something to
// add (and then fail with EEXIST).
func listRules(h *netlink.Handle) ([]netlink.Rule, error) {
	var err error
	for range 3 {
		var ks []netlink.Rule
		ks, err = h.RuleList(netlink.FAMILY_V4)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("dump rules: %w", err)
		}
		return ks, nil
	}
	return nil, fmt.Errorf("dump rules: %w", err)
}

func listRoutes(h *netlink.Handle) ([]netlink.Route, error) {
	var err error
	// Table UNSPEC with the table filter bit set means "every table".
	filter := &netlink.Route{Table: unix.RT_TABLE_UNSPEC}
	for range 3 {
		var ks []netlink.Route
		ks, err = h.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("dump routes: %w", err)
		}
		return ks, nil
	}
	return nil, fmt.Errorf("dump routes: %w", err)
}

func (r *Reconciler) logResult(res Result, err error) {
	for _, s := range res.Added {
		r.log.Info("routing added", "what", s)
	}
	for _, s := range res.Replaced {
		r.log.Info("routing replaced", "what", s)
	}
	for _, s := range res.Removed {
		r.log.Info("routing removed", "what", s)
	}
	if res.Changed() {
		r.log.Info("routing reconciled", "added", len(res.Added), "replaced", len(res.Replaced),
			"removed", len(res.Removed), "duration", res.Duration)
	}
	// Errors and foreign routes tend to persist; say so once per change.
	problems := fmt.Sprint(res.Errors, err, res.Foreign)
	if problems == r.lastProblems {
		return
	}
	r.lastProblems = problems
	if err != nil {
		r.log.Error("routing pass failed", "err", err)
	}
	for _, e := range res.Errors {
		r.log.Warn("routing problem", "err", e)
	}
	for _, f := range res.Foreign {
		r.log.Warn("route of another program in a wanreact table left alone", "route", f)
	}
}

func cloneDesired(d reactor.Desired) reactor.Desired {
	c := d
	c.Active = slices.Clone(d.Active)
	c.Slots = slices.Clone(d.Slots)
	c.WANs = slices.Clone(d.WANs)
	for i := range c.WANs {
		c.WANs[i].ExtraRoutes = slices.Clone(d.WANs[i].ExtraRoutes)
	}
	return c
}

// Cleanup removes every IPv4 rule with protocol Proto, every route with
// protocol Proto in any table, and every route of any protocol in tables
// (the WAN tables, the slot tables and the active table of the
// configuration): the
// uninstall path of `wanreact cleanup`. Addresses are left in place, since
// removing a WAN's address would cut the router off. report, if not nil,
// receives a line per removed object. Errors are collected; Cleanup goes on
// with the rest.
func Cleanup(h *netlink.Handle, tables []int, report func(string)) error {
	if h == nil {
		return errors.New("cleanup: nil netlink handle")
	}
	if report == nil {
		report = func(string) {}
	}
	var errs []error
	rules, err := listRules(h)
	if err != nil {
		errs = append(errs, err)
	}
	for _, k := range rules {
		if k.Protocol != Proto {
			continue
		}
		s := ruleFromKernel(k)
		if err := h.RuleDel(s.toKernel()); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete %s: %w", s, err))
			continue
		}
		report("removed " + s.String())
	}
	ours := map[int]bool{}
	for _, t := range tables {
		if validTable(t) {
			ours[t] = true
		} else {
			errs = append(errs, fmt.Errorf("cleanup: table %d is reserved or invalid; not flushed", t))
		}
	}
	routes, err := listRoutes(h)
	if err != nil {
		errs = append(errs, err)
	}
	// Interface names make the report readable ("dev wan0", not "dev if3").
	names := map[int]string{}
	if links, err := h.LinkList(); err == nil {
		for _, l := range links {
			names[l.Attrs().Index] = l.Attrs().Name
		}
	}
	for _, k := range routes {
		if int(k.Protocol) != Proto && !ours[k.Table] {
			continue
		}
		s := routeFromKernel(k, names)
		// Delete with the dumped attributes and protocol so that exactly
		// this route goes, including foreign ones in our tables.
		if err := h.RouteDel(s.toKernel()); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete %s: %w", s, err))
			continue
		}
		report("removed " + s.String())
	}
	return errors.Join(errs...)
}

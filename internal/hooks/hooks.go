// Package hooks runs the user's executables when a WAN changes state, the
// active set changes or a DHCP lease changes. Hooks never run on the
// reactor goroutine: Observe only builds a job and queues it without
// blocking; a bounded pool of workers runs the jobs with a timeout each. A
// hook that hangs or fails therefore never delays a failover; at worst new
// jobs are dropped (with a logged warning) once the queue is full.
package hooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wanreact/wanreact/config"
)

// Job is one hook event: every hook in the directory runs for it, in name
// order, with Env.
type Job struct {
	// Key serialises jobs: the jobs of one key run one after the other in
	// the order they were queued (a WAN's name, or "active").
	Key string
	// Event is WANREACT_EVENT: up, down, degraded, unknown, active, lease.
	Event string
	WAN   string
	// Env is the hook's whole environment (see Observer.env).
	Env []string
	// Queued is when the event happened (the event's time).
	Queued time.Time
}

// Result is the outcome of one executable for one job.
type Result struct {
	Job  Job
	Hook string // file name within the hooks directory
	// Outcome is "ok", "failed" (non-zero exit or could not start),
	// "timeout" (killed) or "dropped" (queue full: never ran).
	Outcome  string
	ExitCode int // -1 when killed or not started
	Duration time.Duration
	// Output is what the hook wrote to stdout and stderr, truncated to
	// maxOutput bytes.
	Output string
	Err    error
}

// Options configures a Runner.
type Options struct {
	config.Hooks
	Logger *slog.Logger
	// OnResult, if set, sees every result, from a worker goroutine.
	OnResult func(Result)
	// KillGrace is how long a timed-out hook gets between SIGTERM and
	// SIGKILL. Default 1s.
	KillGrace time.Duration
}

// maxOutput bounds the output kept (and logged) per hook run.
const maxOutput = 4 << 10

// basePath is the PATH hooks get: the daemon's own environment (which
// under systemd holds NOTIFY_SOCKET and the like) is not passed on.
const basePath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Runner queues and runs hook jobs. Submit and the Observer methods are
// safe for concurrent use and never block.
type Runner struct {
	log      *slog.Logger
	onResult func(Result)

	mu      sync.Mutex
	opts    Options
	pending []Job
	busy    map[string]bool // keys with a job running
	running int
	wake    chan struct{}
	wg      sync.WaitGroup

	// Observe's memory, touched only from the reactor goroutine.
	lastActive []string
}

// New returns a runner; Run must be running for jobs to execute.
func New(o Options) *Runner {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Runner{
		log: o.Logger, onResult: o.OnResult, opts: normalize(o),
		busy: map[string]bool{}, wake: make(chan struct{}, 1),
	}
}

func normalize(o Options) Options {
	if o.Timeout <= 0 {
		o.Timeout = config.DefaultHookTimeout
	}
	if o.MaxParallel <= 0 {
		o.MaxParallel = config.DefaultHookParallel
	}
	if o.Queue <= 0 {
		o.Queue = config.DefaultHookQueue
	}
	if o.KillGrace <= 0 {
		o.KillGrace = time.Second
	}
	return o
}

// SetConfig takes new hook settings (on reload). Running hooks keep the
// timeout they started with.
func (r *Runner) SetConfig(h config.Hooks) {
	r.mu.Lock()
	o := r.opts
	o.Hooks = h
	r.opts = normalize(o)
	r.mu.Unlock()
	r.signal()
}

// Enabled reports whether a hooks directory is configured.
func (r *Runner) Enabled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opts.Dir != ""
}

// Submit queues a job and reports whether it was accepted. A full queue
// drops the job with a warning (and a "dropped" result): the daemon's
// decisions must never wait for user scripts.
func (r *Runner) Submit(j Job) bool {
	r.mu.Lock()
	if r.opts.Dir == "" {
		r.mu.Unlock()
		return false
	}
	if len(r.pending) >= r.opts.Queue {
		n := len(r.pending)
		r.mu.Unlock()
		r.log.Warn("hook queue full; event dropped", "event", j.Event, "wan", j.WAN, "queued", n)
		r.report(Result{Job: j, Hook: "*", Outcome: "dropped", ExitCode: -1})
		return false
	}
	r.pending = append(r.pending, j)
	r.mu.Unlock()
	r.signal()
	return true
}

func (r *Runner) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Pending is the number of queued jobs not yet started.
func (r *Runner) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// Run dispatches queued jobs until ctx is done, then ends the hooks still
// running (SIGTERM, then SIGKILL after the grace period) and waits for them.
func (r *Runner) Run(ctx context.Context) error {
	for {
		for {
			j, ok := r.next()
			if !ok {
				break
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.runJob(ctx, j)
				r.mu.Lock()
				delete(r.busy, j.Key)
				r.running--
				r.mu.Unlock()
				r.signal()
			}()
		}
		select {
		case <-ctx.Done():
			r.wg.Wait()
			return nil
		case <-r.wake:
		}
	}
}

// next takes the oldest queued job whose key is idle, if a worker is free.
func (r *Runner) next() (Job, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running >= r.opts.MaxParallel {
		return Job{}, false
	}
	for i, j := range r.pending {
		if r.busy[j.Key] {
			continue
		}
		r.pending = append(r.pending[:i], r.pending[i+1:]...)
		r.busy[j.Key] = true
		r.running++
		return j, true
	}
	return Job{}, false
}

func (r *Runner) runJob(ctx context.Context, j Job) {
	r.mu.Lock()
	o := r.opts
	r.mu.Unlock()
	hooks, err := List(o.Dir)
	if err != nil {
		r.log.Error("hooks not run", "dir", o.Dir, "event", j.Event, "wan", j.WAN, "err", err)
		r.report(Result{Job: j, Hook: "*", Outcome: "failed", ExitCode: -1, Err: err})
		return
	}
	for _, h := range hooks {
		if ctx.Err() != nil {
			return
		}
		res := r.runOne(ctx, o, j, h)
		attrs := []any{"hook", res.Hook, "event", j.Event, "wan", j.WAN, "result", res.Outcome,
			"exit", res.ExitCode, "took", res.Duration.Round(time.Millisecond)}
		if res.Output != "" {
			attrs = append(attrs, "output", res.Output)
		}
		if res.Err != nil {
			attrs = append(attrs, "err", res.Err)
		}
		if res.Outcome == "ok" {
			r.log.Info("hook ran", attrs...)
		} else {
			r.log.Warn("hook failed", attrs...)
		}
		r.report(res)
	}
}

func (r *Runner) report(res Result) {
	if r.onResult != nil {
		r.onResult(res)
	}
}

// runOne runs one executable with the job's environment in its own process
// group, so that a timeout ends whatever the hook started too.
func (r *Runner) runOne(ctx context.Context, o Options, j Job, path string) Result {
	res := Result{Job: j, Hook: filepath.Base(path), ExitCode: -1}
	out := &limitedBuffer{max: maxOutput}
	cmd := exec.Command(path)
	cmd.Env = j.Env
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A hook's background children may keep the output pipe open after
	// the hook is gone; don't wait for them beyond this.
	cmd.WaitDelay = o.KillGrace
	start := time.Now()
	if err := cmd.Start(); err != nil {
		res.Outcome, res.Err = "failed", fmt.Errorf("start: %w", err)
		return res
	}
	pgid := cmd.Process.Pid

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	timer := time.NewTimer(o.Timeout)
	defer timer.Stop()
	var err error
	select {
	case err = <-done:
	case <-timer.C:
		res.Outcome = "timeout"
		err = killGroup(pgid, done, o.KillGrace)
	case <-ctx.Done():
		res.Outcome = "failed"
		_ = killGroup(pgid, done, o.KillGrace)
	}
	res.Duration = time.Since(start)
	res.Output = strings.TrimSpace(out.String())
	switch res.Outcome {
	case "timeout":
		res.Err = fmt.Errorf("killed after %v", o.Timeout)
		return res
	case "failed":
		res.Err = errors.New("stopped: the daemon is shutting down")
		return res
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		res.Outcome, res.ExitCode = "ok", 0
	case errors.As(err, &ee):
		res.Outcome, res.ExitCode = "failed", ee.ExitCode()
		if ee.ExitCode() >= 0 {
			res.Err = nil
		} else {
			res.Err = err
		}
	default:
		res.Outcome, res.Err = "failed", err
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		// The hook itself exited; a child it left behind held the
		// output open. Its exit status still counts.
		res.Err = errors.New("a process started by the hook kept its output open; not waited for")
	}
	return res
}

// killGroup sends SIGTERM to the hook's process group, then SIGKILL after
// grace, and returns the hook's wait error.
func killGroup(pgid int, done <-chan error, grace time.Duration) error {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case err := <-done:
		// The group may still hold children that ignored SIGTERM.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		return err
	case <-time.After(grace):
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return <-done
}

// List returns the hooks of dir in the order they run: regular executable
// files, sorted by name, skipping hidden files and package-manager or
// editor leftovers. A missing directory has no hooks. The directory and
// every hook must not be writable by group or others and must belong to
// root or to the daemon's user: hooks run with the daemon's privileges.
func List(dir string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	if err := safeOwner(dir, st); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		name := e.Name()
		if skipName(name) {
			continue
		}
		p := filepath.Join(dir, name)
		st, err := os.Stat(p) // follows symlinks, like run-parts
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			continue
		}
		if err := safeOwner(p, st); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

func skipName(name string) bool {
	if strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") || strings.HasSuffix(name, ".disabled") {
		return true
	}
	for _, s := range []string{".dpkg-old", ".dpkg-new", ".dpkg-dist", ".dpkg-tmp", ".ucf-old", ".ucf-new", ".ucf-dist", ".rpmsave", ".rpmnew", ".swp", ".bak", ".orig"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// safeOwner refuses files others could change: a hook is code run as root.
func safeOwner(p string, st os.FileInfo) error {
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %v); refusing to run hooks from it", p, st.Mode().Perm())
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 && int(sys.Uid) != os.Geteuid() {
		return fmt.Errorf("%s belongs to uid %d, not root; refusing to run hooks from it", p, sys.Uid)
	}
	return nil
}

// limitedBuffer keeps the first max bytes written and counts the rest.
type limitedBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	max     int
	dropped int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	room := l.max - l.b.Len()
	if room >= len(p) {
		l.b.Write(p)
	} else {
		if room > 0 {
			l.b.Write(p[:room])
		}
		l.dropped += len(p) - max(room, 0)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dropped > 0 {
		return fmt.Sprintf("%s… (%d more bytes)", l.b.String(), l.dropped)
	}
	return l.b.String()
}

package eventlog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

type testLine struct {
	W   int `json:"w"`
	Seq int `json:"seq"`
	// Pad makes lines of realistic size (a probe line is ~150 bytes).
	Pad string `json:"pad"`
}

func mkLine(w, seq int) []byte {
	b, _ := json.Marshal(testLine{W: w, Seq: seq, Pad: "probe 198.51.100.1 reply in 1.23ms via isp1"})
	return b
}

func parse(t *testing.T, b []byte) testLine {
	t.Helper()
	var l testLine
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatalf("bad line %q: %v", b, err)
	}
	return l
}

// fileLines reads FILE.1 then FILE, failing on any line that is not JSON.
func fileLines(t *testing.T, path string, maxSize int64) []testLine {
	t.Helper()
	var out []testLine
	for _, p := range []string{path + ".1", path} {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if maxSize > 0 && int64(len(b)) > maxSize {
			t.Errorf("%s is %d bytes, over the rotation size %d", p, len(b), maxSize)
		}
		if len(b) > 0 && b[len(b)-1] != '\n' {
			t.Errorf("%s does not end with a newline", p)
		}
		for line := range bytes.Lines(b) {
			out = append(out, parse(t, bytes.TrimSuffix(line, []byte("\n"))))
		}
	}
	return out
}

// collector gathers what Stream delivers.
type collector struct {
	mu    sync.Mutex
	lines []testLine
	bad   []string
}

func (c *collector) add(b []byte) error {
	var l testLine
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := json.Unmarshal(b, &l); err != nil {
		c.bad = append(c.bad, string(b))
		return nil
	}
	c.lines = append(c.lines, l)
	return nil
}

func (c *collector) snapshot() []testLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]testLine(nil), c.lines...)
}

// TestRotationUnderLoad: 4 writers append 20000 lines to a log that rotates
// every 8 KiB (about 170 rotations). A follower that started before the
// load sees every line once and in each writer's order; a second stream,
// opened in the middle of the load and of rotations, gets history plus live
// lines with no gap and no duplicate; what stays on disk is exactly the
// tail of the sequence, in whole lines, no file over the limit.
func TestRotationUnderLoad(t *testing.T) {
	const writers, perWriter, maxSize = 4, 5000, 8 << 10
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := Open(path, maxSize)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var all, mid collector
	var streams sync.WaitGroup
	stream := func(c *collector) {
		streams.Add(1)
		go func() {
			defer streams.Done()
			if err := l.Stream(ctx, true, c.add); err != nil {
				t.Errorf("stream: %v", err)
			}
		}()
	}
	stream(&all)
	// Let the first follower register before any line is written.
	for deadline := time.Now().Add(2 * time.Second); ; {
		l.mu.Lock()
		n := len(l.followers)
		l.mu.Unlock()
		if n == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}

	var wg sync.WaitGroup
	half := make(chan struct{})
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				if err := l.Write(mkLine(w, i)); err != nil {
					t.Errorf("write: %v", err)
					return
				}
				if w == 0 && i == perWriter/2 {
					close(half)
				}
			}
		}()
	}
	<-half
	stream(&mid)
	wg.Wait()

	const total = writers * perWriter
	waitLen := func(c *collector, n int) []testLine {
		deadline := time.Now().Add(10 * time.Second)
		for {
			s := c.snapshot()
			if len(s) >= n || time.Now().After(deadline) {
				return s
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	got := waitLen(&all, total)
	if len(got) != total {
		t.Fatalf("follower got %d lines, want %d", len(got), total)
	}
	next := make([]int, writers)
	for _, x := range got {
		if x.Seq != next[x.W] {
			t.Fatalf("writer %d: got seq %d, want %d (lost, duplicated or reordered)", x.W, x.Seq, next[x.W])
		}
		next[x.W]++
	}
	// The mid-load stream starts somewhere in the global order and then
	// must follow it exactly.
	first := mid.snapshot()
	if len(first) == 0 {
		t.Fatal("mid-load stream got nothing")
	}
	start := index(got, first[0])
	if start < 0 {
		t.Fatalf("mid-load stream's first line %+v is not in the log", first[0])
	}
	midGot := waitLen(&mid, total-start)
	if len(midGot) != total-start {
		t.Fatalf("mid-load stream got %d lines from position %d, want %d", len(midGot), start, total-start)
	}
	for i, x := range midGot {
		if x != got[start+i] {
			t.Fatalf("mid-load stream line %d = %+v, want %+v", i, x, got[start+i])
		}
	}
	if len(all.bad)+len(mid.bad) > 0 {
		t.Errorf("streams got invalid lines: %q %q", all.bad, mid.bad)
	}

	rot := l.Rotations()
	onDisk := fileLines(t, path, maxSize)
	tail := got[len(got)-len(onDisk):]
	for i := range onDisk {
		if onDisk[i] != tail[i] {
			t.Fatalf("file line %d = %+v, want %+v: the files are not the tail of what was written", i, onDisk[i], tail[i])
		}
	}
	if rot < 100 {
		t.Errorf("only %d rotations; the test should rotate under load", rot)
	}
	cancel()
	streams.Wait()
	t.Logf("%d lines by %d writers, %d rotations, %d lines kept on disk, mid-load stream joined at line %d", total, writers, rot, len(onDisk), start)
}

func index(s []testLine, x testLine) int {
	for i := range s {
		if s[i] == x {
			return i
		}
	}
	return -1
}

// TestCrashKeepsAcknowledgedLines: a child process writes as fast as it can
// (rotating every 16 KiB) and reports each completed Write on a pipe; it is
// SIGKILLed mid-stream. Every line whose Write returned must be on disk,
// whole, and the sequence must have no gap.
func TestCrashKeepsAcknowledgedLines(t *testing.T) {
	if path := os.Getenv("WANREACT_EVENTLOG_CHILD"); path != "" {
		crashChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "events.jsonl")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashKeepsAcknowledgedLines$")
	cmd.Env = append(os.Environ(), "WANREACT_EVENTLOG_CHILD="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	acked := -1
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		n, err := strconv.Atoi(sc.Text())
		if err != nil {
			continue // test framework chatter
		}
		acked = n
		if acked >= 3000 {
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() { // acks written before the kill landed
		if n, err := strconv.Atoi(sc.Text()); err == nil {
			acked = n
		}
	}
	_ = cmd.Wait()
	if acked < 0 {
		t.Fatal("child acknowledged nothing")
	}
	lines := fileLines(t, path, 16<<10)
	if len(lines) == 0 {
		t.Fatal("nothing on disk")
	}
	first := lines[0].Seq
	for i, l := range lines {
		if l.Seq != first+i {
			t.Fatalf("gap on disk: line %d has seq %d, want %d", i, l.Seq, first+i)
		}
	}
	last := lines[len(lines)-1].Seq
	if last < acked {
		t.Fatalf("acknowledged line %d lost in the crash (last on disk: %d)", acked, last)
	}
	t.Logf("killed after %d acknowledged writes; disk holds %d..%d (%d whole lines, at most one unacknowledged)", acked+1, first, last, len(lines))
	if last > acked+1 {
		t.Errorf("disk holds line %d but only %d was acknowledged (the pipe lost acks?)", last, acked)
	}
	// The next run appends cleanly after the crash.
	l, err := Open(path, 16<<10)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Write(mkLine(0, last+1)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if again := fileLines(t, path, 16<<10); again[len(again)-1].Seq != last+1 {
		t.Fatalf("after reopening, last line is %+v", again[len(again)-1])
	}
}

func crashChild(path string) {
	l, err := Open(path, 16<<10)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	for i := 0; i < 10_000_000; i++ {
		if err := l.Write(mkLine(0, i)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		// An ack is a write(2) of its own, after the line's write(2).
		fmt.Fprintf(os.Stdout, "%d\n", i)
	}
	os.Exit(0)
}

// TestStreamFollowAcrossRotation is `wanreact events -f` across a rotation:
// history from both files, then live lines while the log rotates several
// times, each exactly once.
func TestStreamFollowAcrossRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := Open(path, 4<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := 0; i < 100; i++ { // history spanning FILE.1 and FILE
		l.Write(mkLine(0, i))
	}
	if l.Rotations() == 0 {
		t.Fatal("setup: no rotation in the history")
	}
	hist := fileLines(t, path, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var c collector
	done := make(chan error, 1)
	go func() { done <- l.Stream(ctx, true, c.add) }()
	for len(c.snapshot()) < len(hist) {
		time.Sleep(time.Millisecond)
	}
	before := l.Rotations()
	for i := 100; i < 300; i++ {
		l.Write(mkLine(0, i))
	}
	if l.Rotations()-before < 3 {
		t.Fatalf("only %d rotations while following", l.Rotations()-before)
	}
	want := hist[0].Seq
	deadline := time.Now().Add(5 * time.Second)
	for len(c.snapshot()) < 300-want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	got := c.snapshot()
	if len(got) != 300-want {
		t.Fatalf("got %d lines, want %d (seq %d..299)", len(got), 300-want, want)
	}
	for i, x := range got {
		if x.Seq != want+i {
			t.Fatalf("line %d: seq %d, want %d", i, x.Seq, want+i)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("stream ended with %v", err)
	}
}

// TestSlowFollowerIsCut: a follower that stops reading never blocks the
// writer; its stream ends with ErrFellBehind once the buffer is full.
func TestSlowFollowerIsCut(t *testing.T) {
	l, err := Open("", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Write(mkLine(0, 0))
	block := make(chan struct{})
	done := make(chan error, 1)
	var n int
	go func() {
		done <- l.Stream(context.Background(), true, func([]byte) error {
			n++
			if n == 2 { // first live line: stall
				<-block
			}
			return nil
		})
	}()
	for {
		l.mu.Lock()
		k := len(l.followers)
		l.mu.Unlock()
		if k == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	for i := 1; i <= followerBuffer+10; i++ {
		l.Write(mkLine(0, i))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("writes took %v with a stalled follower", d)
	}
	close(block)
	if err := <-done; !errors.Is(err, ErrFellBehind) {
		t.Fatalf("stalled follower ended with %v, want ErrFellBehind", err)
	}
	// The ring kept the latest lines regardless.
	if r := l.Recent(); len(r) != ringSize || parse(t, bytes.TrimSpace(r[len(r)-1])).Seq != followerBuffer+10 {
		t.Errorf("ring holds %d lines, last %q", len(r), r[len(r)-1])
	}
}

// TestMemoryOnly: without a file, history is the ring.
func TestMemoryOnly(t *testing.T) {
	l, _ := Open("", 0)
	for i := 0; i < ringSize+5; i++ {
		l.Write(mkLine(0, i))
	}
	h, err := l.History()
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != ringSize || parse(t, bytes.TrimSpace(h[0])).Seq != 5 {
		t.Fatalf("history: %d lines, first %q", len(h), h[0])
	}
	l.Close()
	if err := l.Write(mkLine(0, 0)); err == nil {
		t.Error("write after Close succeeded")
	}
	// A stream on a closed log ends at once instead of hanging.
	if err := l.Stream(context.Background(), true, func([]byte) error { return nil }); err != nil {
		t.Errorf("stream on closed log: %v", err)
	}
}

// TestTornLines: a torn last line (power cut) is terminated on open so the
// next line stays whole, and readers skip it.
func TestTornLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	good := string(mkLine(0, 1))
	if err := os.WriteFile(path, []byte(good+"\n{\"w\":0,\"se"), 0o640); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.Write(mkLine(0, 2))
	h, err := l.History()
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || parse(t, bytes.TrimSpace(h[1])).Seq != 2 {
		t.Fatalf("history after a torn line: %q", h)
	}
	l.Close()
}

// TestRotationFailureKeepsWriting: when FILE cannot be renamed (here FILE.1
// is a non-empty directory), lines keep going to FILE and the error is
// reported once, not per line.
func TestRotationFailureKeepsWriting(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.jsonl")
	if err := os.MkdirAll(filepath.Join(path+".1", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, 4<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var errs int
	for i := 0; i < 200; i++ {
		if err := l.Write(mkLine(0, i)); err != nil {
			errs++
		}
	}
	if errs != 1 {
		t.Errorf("%d write errors reported, want exactly 1", errs)
	}
	b, _ := os.ReadFile(path)
	if n := bytes.Count(b, []byte("\n")); n != 200 {
		t.Errorf("file holds %d lines, want all 200", n)
	}
}

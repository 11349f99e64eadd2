// Package eventlog writes the daemon's event log: one JSON object per line,
// appended with a single write each (so a crash loses at most the line being
// written), rotated by size, kept in a small in-memory ring for `wanreact
// events` when no file is configured, and fanned out to live followers.
package eventlog

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// DefaultMaxSize is the size at which the log file is rotated to FILE.1.
const DefaultMaxSize = 8 << 20

// ringSize is how many recent lines are kept in memory.
const ringSize = 2048

// followerBuffer is how many lines a slow follower may lag behind before
// it is cut off: the writer never waits for a reader.
const followerBuffer = 4096

// maxLine bounds one line read back from a file. Lines are written whole by
// this package, so only a damaged file has longer ones; they are skipped.
const maxLine = 16 << 20

// reopenEvery limits how often a log whose file could not be (re)opened
// retries, so that a full or read-only disk costs one syscall per second,
// not one per event.
const reopenEvery = time.Second

// ErrFellBehind ends a follower that did not keep up with the log.
var ErrFellBehind = errors.New("event log: follower fell behind; reconnect")

// Log is safe for concurrent use.
type Log struct {
	mu        sync.Mutex
	path      string
	maxSize   int64
	f         *os.File
	size      int64
	ring      [][]byte
	ringNext  int
	followers map[chan []byte]struct{}
	closed    bool
	// writeErr is the last error writing the file, reported once.
	writeErr error
	// lastOpen is when a failed file was last retried, rotateFailed when
	// a rotation last failed (zero: it did not).
	lastOpen     time.Time
	rotateFailed time.Time
	rotations    int
}

// Open opens (appending) the log at path; an empty path keeps only the
// in-memory ring. maxSize <= 0 means DefaultMaxSize.
func Open(path string, maxSize int64) (*Log, error) {
	l := &Log{path: path, maxSize: maxSize, followers: map[chan []byte]struct{}{}}
	if l.maxSize <= 0 {
		l.maxSize = DefaultMaxSize
	}
	if path == "" {
		return l, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Log) open() error {
	l.lastOpen = time.Now()
	// Read access is only for the last byte, below.
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("event log: %w", err)
	}
	l.f, l.size = f, st.Size()
	// A power cut can leave a torn last line. End it, or the next line
	// would be glued to it and lost with it.
	var last [1]byte
	if l.size > 0 {
		if _, err := f.ReadAt(last[:], l.size-1); err == nil && last[0] != '\n' {
			n, _ := f.Write([]byte{'\n'})
			l.size += int64(n)
		}
	}
	return nil
}

// Path is the file the log writes to ("" when memory-only).
func (l *Log) Path() string { return l.path }

// Rotations counts the rotations since Open (for tests and metrics).
func (l *Log) Rotations() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rotations
}

// Write appends one line (without its newline). It returns the first error
// of a broken file only once, so a full disk does not flood the logs; the
// ring and followers keep working regardless, and the file is retried.
func (l *Log) Write(line []byte) error {
	b := make([]byte, len(line)+1)
	copy(b, line)
	b[len(line)] = '\n'
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("event log: closed")
	}
	if len(l.ring) < ringSize {
		l.ring = append(l.ring, b)
	} else {
		l.ring[l.ringNext] = b
		l.ringNext = (l.ringNext + 1) % ringSize
	}
	for ch := range l.followers {
		select {
		case ch <- b[:len(line)]:
		default:
			// Too slow: end its stream rather than block the reactor.
			close(ch)
			delete(l.followers, ch)
		}
	}
	if l.path == "" {
		return nil
	}
	if l.f == nil {
		if time.Since(l.lastOpen) < reopenEvery {
			return nil
		}
		if err := l.open(); err != nil {
			return l.fail(err)
		}
	}
	var rotErr error
	if l.size+int64(len(b)) > l.maxSize && l.size > 0 && time.Since(l.rotateFailed) >= reopenEvery {
		if err := l.rotate(); err != nil {
			l.rotateFailed = time.Now()
			rotErr = l.fail(err)
			if l.f == nil {
				return rotErr
			}
			// The old file is still open: keep appending to it
			// (over its size) rather than lose lines, and retry
			// the rotation later.
		} else {
			l.rotateFailed = time.Time{}
		}
	}
	// One write per line: with O_APPEND the kernel places it whole at the
	// end, so a crash of the daemon never leaves half a line behind
	// (a power cut can, and readers skip such a line).
	n, err := l.f.Write(b)
	l.size += int64(n)
	if err != nil {
		return l.fail(err)
	}
	if l.rotateFailed.IsZero() {
		l.writeErr = nil
	}
	return rotErr
}

func (l *Log) fail(err error) error {
	if l.writeErr != nil {
		return nil
	}
	l.writeErr = err
	return fmt.Errorf("event log %s: %w", l.path, err)
}

// rotate renames FILE to FILE.1 (replacing the previous one) and starts a
// new FILE. Followers read from memory, so rotation never breaks them. On
// a failed rename the current file stays open.
func (l *Log) rotate() error {
	// Flush the finished file to disk once, so a power cut after
	// rotation cannot lose the whole of FILE.1; per-line fsyncs would
	// wear out the flash of small routers.
	_ = l.f.Sync()
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	l.f.Close()
	l.f = nil
	l.rotations++
	return l.open()
}

// Recent returns the lines kept in memory, oldest first, each with its
// newline.
func (l *Log) Recent() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.recentLocked()
}

func (l *Log) recentLocked() [][]byte {
	out := make([][]byte, 0, len(l.ring))
	out = append(out, l.ring[l.ringNext:]...)
	out = append(out, l.ring[:l.ringNext]...)
	return out
}

// History returns what the files hold (FILE.1 then FILE), or the ring when
// there is no file. It loads everything into memory; Stream does not.
func (l *Log) History() ([][]byte, error) {
	var out [][]byte
	err := l.Stream(context.Background(), false, func(line []byte) error {
		out = append(out, append(append([]byte(nil), line...), '\n'))
		return nil
	})
	return out, err
}

// Follow returns a channel of new lines (without newline) and a cancel
// func. The channel is closed when the follower falls too far behind.
func (l *Log) Follow() (<-chan []byte, func()) {
	ch := make(chan []byte, followerBuffer)
	l.mu.Lock()
	if l.closed {
		close(ch)
	} else {
		l.followers[ch] = struct{}{}
	}
	l.mu.Unlock()
	return ch, func() { l.unfollow(ch) }
}

func (l *Log) unfollow(ch chan []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.followers[ch]; ok {
		delete(l.followers, ch)
		close(ch)
	}
}

// Stream calls fn with every line of the log's history (FILE.1, then FILE;
// or the in-memory ring without a file), oldest first, and then, with
// follow, with every new line until ctx is done. Every line is delivered
// exactly once even if the log rotates meanwhile: the files are opened and
// their lengths taken under the same lock that registers the follower, and
// an open file survives being renamed or replaced. Lines are passed without
// their newline and are only valid during the call. A line that is not
// valid JSON (a power cut's torn write) is skipped. Stream returns fn's
// first error, ErrFellBehind if a follower could not keep up, or nil.
func (l *Log) Stream(ctx context.Context, follow bool, fn func(line []byte) error) error {
	type part struct {
		f    *os.File
		size int64
	}
	var parts []part
	var mem [][]byte
	var ch chan []byte
	l.mu.Lock()
	if l.path == "" {
		mem = l.recentLocked()
	} else {
		for _, p := range []string{l.path + ".1", l.path} {
			f, err := os.Open(p)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			var st os.FileInfo
			if err == nil {
				st, err = f.Stat()
			}
			if err != nil {
				l.mu.Unlock()
				for _, pt := range parts {
					pt.f.Close()
				}
				if f != nil {
					f.Close()
				}
				return fmt.Errorf("event log: %w", err)
			}
			parts = append(parts, part{f, st.Size()})
		}
	}
	if follow && !l.closed {
		ch = make(chan []byte, followerBuffer)
		l.followers[ch] = struct{}{}
	}
	l.mu.Unlock()
	if ch != nil {
		defer l.unfollow(ch)
	}
	defer func() {
		for _, pt := range parts {
			pt.f.Close()
		}
	}()

	for _, b := range mem {
		if err := fn(b[:len(b)-1]); err != nil {
			return err
		}
	}
	for _, pt := range parts {
		if err := readLines(ctx, io.LimitReader(pt.f, pt.size), fn); err != nil {
			return err
		}
	}
	if ch == nil {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-ch:
			if !ok {
				l.mu.Lock()
				closed := l.closed
				l.mu.Unlock()
				if closed {
					return nil
				}
				return ErrFellBehind
			}
			if err := fn(line); err != nil {
				return err
			}
		}
	}
}

// readLines calls fn for each complete, valid JSON line of r.
func readLines(ctx context.Context, r io.Reader, fn func([]byte) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte // a line longer than the reader's buffer, assembled
	for n := 0; ; n++ {
		if n%1024 == 0 && ctx.Err() != nil {
			return nil
		}
		chunk, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(long)+len(chunk) <= maxLine {
				long = append(long, chunk...)
			} else {
				long = long[:0:0]
				// Skip to the end of this overlong line.
				for errors.Is(err, bufio.ErrBufferFull) {
					_, err = br.ReadSlice('\n')
				}
				if err != nil {
					return ignoreEOF(err)
				}
			}
			continue
		}
		if err != nil {
			// A last line without newline was cut by a power loss or
			// is being written right now (beyond the length noted):
			// either way not a line yet.
			return ignoreEOF(err)
		}
		line := chunk[:len(chunk)-1]
		if len(long) > 0 {
			long = append(long, line...)
			line, long = long, nil
		}
		if len(line) == 0 || !json.Valid(line) {
			continue
		}
		if err := fn(line); err != nil {
			return err
		}
	}
}

func ignoreEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return fmt.Errorf("event log: %w", err)
}

// Close ends the followers and closes the file (synced to disk).
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for ch := range l.followers {
		close(ch)
		delete(l.followers, ch)
	}
	if l.f == nil {
		return nil
	}
	_ = l.f.Sync()
	err := l.f.Close()
	l.f = nil
	return err
}

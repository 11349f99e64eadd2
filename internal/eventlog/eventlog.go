// Package eventlog writes the daemon's event log: one JSON object per line,
// appended with a single write each (so a crash loses at most the line being
// written), rotated by size, kept in a small in-memory ring for `wanreact
// events` when no file is configured, and fanned out to live followers.
package eventlog

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// DefaultMaxSize is the size at which the log file is rotated to FILE.1.
const DefaultMaxSize = 8 << 20

// ringSize is how many recent lines are kept in memory.
const ringSize = 2048

// followerBuffer is how many lines a slow follower may lag behind before
// it is cut off (it is told so in a final line).
const followerBuffer = 4096

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
	// writeErr is the last error writing the file, reported once.
	writeErr error
}

// Open opens (appending) the log at path; an empty path keeps only the
// in-memory ring.
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
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("event log: %w", err)
	}
	l.f, l.size = f, st.Size()
	return nil
}

// Path is the file the log writes to ("" when memory-only).
func (l *Log) Path() string { return l.path }

// Write appends one line (without its newline). It returns the first error
// of a broken file only once, so a full disk does not flood the logs; the
// ring and followers keep working regardless.
func (l *Log) Write(line []byte) error {
	b := make([]byte, len(line)+1)
	copy(b, line)
	b[len(line)] = '\n'
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ring) < ringSize {
		l.ring = append(l.ring, b)
	} else {
		l.ring[l.ringNext] = b
		l.ringNext = (l.ringNext + 1) % ringSize
	}
	for ch := range l.followers {
		select {
		case ch <- b:
		default:
			// Too slow: end its stream rather than block the reactor.
			close(ch)
			delete(l.followers, ch)
		}
	}
	if l.f == nil {
		return nil
	}
	if l.size+int64(len(b)) > l.maxSize && l.size > 0 {
		if err := l.rotate(); err != nil {
			return l.fail(err)
		}
	}
	n, err := l.f.Write(b)
	l.size += int64(n)
	if err != nil {
		return l.fail(err)
	}
	l.writeErr = nil
	return nil
}

func (l *Log) fail(err error) error {
	if l.writeErr != nil {
		return nil
	}
	l.writeErr = err
	return fmt.Errorf("event log: %w", err)
}

// rotate renames FILE to FILE.1 (replacing the previous one) and starts a
// new FILE. Followers read from memory, so rotation never breaks them.
func (l *Log) rotate() error {
	if err := l.f.Close(); err != nil {
		return err
	}
	l.f = nil
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return err
	}
	return l.open()
}

// Recent returns the lines kept in memory, oldest first.
func (l *Log) Recent() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([][]byte, 0, len(l.ring))
	out = append(out, l.ring[l.ringNext:]...)
	out = append(out, l.ring[:l.ringNext]...)
	return out
}

// History returns what the files hold (FILE.1 then FILE), or the ring when
// there is no file.
func (l *Log) History() ([][]byte, error) {
	if l.path == "" {
		return l.Recent(), nil
	}
	var out [][]byte
	for _, p := range []string{l.path + ".1", l.path} {
		b, err := os.ReadFile(p)
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return nil, err
		}
		for line := range bytes.Lines(b) {
			if len(bytes.TrimSpace(line)) > 0 {
				out = append(out, line)
			}
		}
	}
	return out, nil
}

// Follow returns a channel of new lines (with newline) and a cancel func.
// The channel is closed when the follower falls too far behind.
func (l *Log) Follow() (<-chan []byte, func()) {
	ch := make(chan []byte, followerBuffer)
	l.mu.Lock()
	l.followers[ch] = struct{}{}
	l.mu.Unlock()
	return ch, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if _, ok := l.followers[ch]; ok {
			delete(l.followers, ch)
			close(ch)
		}
	}
}

// Close closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch := range l.followers {
		close(ch)
		delete(l.followers, ch)
	}
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

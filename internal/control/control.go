// Package control is the daemon's unix control socket: one JSON request per
// connection, answered with one or more JSON lines.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Request is what a client sends.
type Request struct {
	Cmd string `json:"cmd"` // "status", "events"
	// Follow keeps an events request open, streaming new lines.
	Follow bool `json:"follow,omitempty"`
	// WAN and Source filter events.
	WAN    string `json:"wan,omitempty"`
	Source string `json:"source,omitempty"`
}

// Handler answers one request by writing JSON lines to w until done.
type Handler func(ctx context.Context, req Request, w *json.Encoder) error

// Server listens on a unix socket.
type Server struct {
	path    string
	ln      net.Listener
	handler Handler
	log     *slog.Logger
}

// Listen creates the socket (replacing a stale one from a dead daemon, but
// refusing to steal one a live daemon still answers on). The socket is
// 0660 so that access is granted through its group, never to everybody.
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another wanreact is running", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &Server{path: path, ln: ln, handler: h, log: log}, nil
}

// Serve accepts connections until ctx is done.
func (s *Server) Serve(ctx context.Context) {
	go func() {
		<-ctx.Done()
		s.ln.Close()
	}()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("control socket accept", "err", err)
			}
			return
		}
		go s.serveConn(ctx, c)
	}
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var req Request
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&req); err != nil {
		_ = json.NewEncoder(c).Encode(map[string]string{"error": "bad request: " + err.Error()})
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	// A following client that goes away must end its stream: watch for
	// EOF on the read side.
	go func() {
		var b [1]byte
		_, _ = c.Read(b[:])
		cancel()
	}()
	if err := s.handler(ctx, req, json.NewEncoder(c)); err != nil {
		_ = json.NewEncoder(c).Encode(map[string]string{"error": err.Error()})
	}
}

// Close removes the socket.
func (s *Server) Close() error {
	err := s.ln.Close()
	_ = os.Remove(s.path)
	return err
}

// ErrUnreachable means no daemon answered on the socket.
var ErrUnreachable = errors.New("daemon unreachable")

// Dial sends a request and returns a decoder over the answer lines.
func Dial(path string, req Request) (net.Conn, *json.Decoder, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return nil, nil, fmt.Errorf("%w at %s: %v", ErrUnreachable, path, err)
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("%w at %s: %v", ErrUnreachable, path, err)
	}
	return c, json.NewDecoder(c), nil
}

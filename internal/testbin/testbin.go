// Package testbin builds the wanreact binary once per test process, for the
// tests that run the real daemon (end to end, demo, packaging).
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	once sync.Once
	path string
	err  error
)

// Wanreact returns the path of a static (CGO_ENABLED=0) build of
// cmd/wanreact, building it on first use; the test fails if it cannot be
// built. The directory is 0755 so that other users (systemd-analyze, a
// daemon started with dropped privileges) can reach the binary.
func Wanreact(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		dir, e := os.MkdirTemp("", "wanreact-test-bin")
		if e != nil {
			err = e
			return
		}
		if e := os.Chmod(dir, 0o755); e != nil {
			err = e
			return
		}
		path = filepath.Join(dir, "wanreact")
		cmd := exec.Command("go", "build", "-o", path, "github.com/wanreact/wanreact/cmd/wanreact")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, e := cmd.CombinedOutput(); e != nil {
			err = fmt.Errorf("go build: %v\n%s", e, out)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// Main runs the tests and removes the build: call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if path != "" {
		os.RemoveAll(filepath.Dir(path))
	}
	os.Exit(code)
}

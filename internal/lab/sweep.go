package lab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// PidDir holds one "<prefix>.pid" file per live lab, containing the creating
// process's pid and start time, so that Sweep can tell a leftover (creator
// dead) from a lab another test process is using right now.
const PidDir = "/run/wanreact-lab"

var (
	prefixRe = regexp.MustCompile(`^[a-z0-9]{1,16}$`)
	// defaultPrefixRe matches random prefixes: namespaces of this shape
	// without a pid file are leftovers (New writes the pid file first and
	// Close removes it last).
	defaultPrefixRe = regexp.MustCompile(`^wrl[0-9a-f]{4}$`)
)

func validPrefix(p string) bool { return prefixRe.MatchString(p) }

// reservePrefix claims a prefix by creating its pid file exclusively. With
// prefix empty it draws random ones until one is free.
func reservePrefix(prefix string) (string, string, error) {
	if err := os.MkdirAll(PidDir, 0o755); err != nil {
		return "", "", fmt.Errorf("lab: %w", err)
	}
	content, err := selfIdentity()
	if err != nil {
		return "", "", err
	}
	for attempt := 0; attempt < 32; attempt++ {
		p := prefix
		if p == "" {
			var b [2]byte
			if _, err := rand.Read(b[:]); err != nil {
				return "", "", fmt.Errorf("lab: random prefix: %w", err)
			}
			p = "wrl" + hex.EncodeToString(b[:])
			if prefixInUse(p) {
				continue
			}
		}
		path := filepath.Join(PidDir, p+".pid")
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			if prefix != "" {
				return "", "", fmt.Errorf("lab: prefix %q in use (%s exists; Sweep removes it if its creator is dead)", p, path)
			}
			continue
		}
		if err != nil {
			return "", "", fmt.Errorf("lab: %w", err)
		}
		_, werr := f.WriteString(content)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			os.Remove(path)
			return "", "", fmt.Errorf("lab: writing %s: %w", path, werr)
		}
		if prefix != "" && prefixInUse(p) {
			os.Remove(path)
			return "", "", fmt.Errorf("lab: namespaces %s-* already exist", p)
		}
		return p, path, nil
	}
	return "", "", errors.New("lab: no free random prefix after 32 attempts (run Sweep?)")
}

// prefixInUse reports whether any namespace "<p>-*" exists.
func prefixInUse(p string) bool {
	ents, err := os.ReadDir(netnsDir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), p+"-") {
			return true
		}
	}
	return false
}

// selfIdentity is "pid starttime\n": the start time (clock ticks since boot)
// guards against a recycled pid making a dead creator look alive.
func selfIdentity() (string, error) {
	pid := os.Getpid()
	st, err := startTime(pid)
	if err != nil {
		return "", fmt.Errorf("lab: own start time: %w", err)
	}
	return fmt.Sprintf("%d %d\n", pid, st), nil
}

// startTime reads field 22 of /proc/PID/stat.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces and parentheses; the
	// fields after its closing parenthesis are plain.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// creatorAlive reads a pid file and reports whether the process that wrote
// it still runs. An unreadable or malformed file counts as dead, except
// while empty: New may be between creating and writing it.
func creatorAlive(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return true
	}
	if len(f) != 2 {
		return false
	}
	pid, err1 := strconv.Atoi(f[0])
	want, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil || pid <= 0 {
		return false
	}
	got, err := startTime(pid)
	return err == nil && got == want
}

// Sweep deletes leftover labs: those whose pid file names a process that is
// gone, and namespaces with a random lab prefix ("wrl" + 4 hex digits) that
// have no pid file at all. Processes still running inside them are killed.
// Labs of live processes are left alone, so parallel test binaries can call
// Sweep safely. It returns the namespaces it deleted.
func Sweep() ([]string, error) {
	var deleted []string
	var errs []error
	ents, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab: %w", err)
	}
	// Pid files are checked after listing the namespaces: New creates its
	// pid file before its namespaces, so any namespace seen here whose lab
	// is live already has its pid file.
	verdict := map[string]bool{} // prefix -> leftover
	leftover := func(p string) bool {
		if v, ok := verdict[p]; ok {
			return v
		}
		pf := filepath.Join(PidDir, p+".pid")
		var v bool
		if _, err := os.Stat(pf); err == nil {
			v = !creatorAlive(pf)
		} else {
			v = defaultPrefixRe.MatchString(p)
		}
		verdict[p] = v
		return v
	}
	var victims []string
	for _, e := range ents {
		if p, _, ok := strings.Cut(e.Name(), "-"); ok && validPrefix(p) && leftover(p) {
			victims = append(victims, e.Name())
		}
	}
	if len(victims) > 0 {
		if err := deleteNamespaces(victims); err != nil {
			errs = append(errs, err)
		}
		for _, v := range victims {
			if _, err := os.Stat(filepath.Join(netnsDir, v)); err == nil {
				errs = append(errs, fmt.Errorf("lab: namespace %s still present after delete", v))
			} else {
				deleted = append(deleted, v)
			}
		}
	}
	pidfiles, _ := filepath.Glob(filepath.Join(PidDir, "*.pid"))
	for _, pf := range pidfiles {
		p := strings.TrimSuffix(filepath.Base(pf), ".pid")
		// A dead creator's record goes once its namespaces are gone; if a
		// deletion failed above, keep it so the next Sweep retries.
		if creatorAlive(pf) || prefixInUse(p) {
			continue
		}
		if err := os.Remove(pf); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("lab: %w", err))
		}
	}
	return deleted, errors.Join(errs...)
}

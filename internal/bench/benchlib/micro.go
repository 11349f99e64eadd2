package benchlib

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// micro runs the Go micro-benchmarks of the reducer and the decoders, one
// package at a time (a package that does not build fails alone).
func (b *bench) micro(ctx context.Context) error {
	dir := b.opts.ModuleDir
	if dir == "" {
		var err error
		if dir, err = moduleDir(ctx); err != nil {
			return err
		}
	}
	benchtime := b.opts.MicroBenchtime
	if benchtime == "" {
		benchtime = "1s"
	}
	var errs []error
	for _, pkg := range b.opts.MicroPackages {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		cmd := exec.CommandContext(pctx, goTool(), "test", "-run", "^$", "-bench", ".", "-benchmem",
			"-benchtime", benchtime, "-count", "1", pkg)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		cancel()
		results, perr := parseBenchOutput(string(out))
		if err != nil || perr != nil {
			errs = append(errs, fmt.Errorf("go test -bench %s: %v %v\n%s", pkg, err, perr, tailLines(string(out), 15)))
		}
		if len(results) == 0 && err == nil {
			errs = append(errs, fmt.Errorf("%s: no benchmarks ran", pkg))
		}
		for _, r := range results {
			b.logf("%s %s: %.0f ns/op, %d B/op, %d allocs/op", r.Package, r.Name, r.NsPerOp, r.BytesPerOp, r.AllocsPerOp)
		}
		b.rep.Micro = append(b.rep.Micro, results...)
	}
	return errors.Join(errs...)
}

// goTool is the go command make uses ($GO), else "go".
func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// moduleDir is the root of the module the working directory is in.
func moduleDir(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module: run from the repository")
	}
	return filepath.Dir(gomod), nil
}

// parseBenchOutput reads `go test -bench -benchmem` output: "pkg:" lines
// name the package of the benchmark lines that follow.
func parseBenchOutput(out string) ([]MicroResult, error) {
	var res []MicroResult
	var errs []error
	pkg := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimPrefix(strings.TrimSpace(p), "github.com/wanreact/wanreact/")
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		// Name, iterations, then (value, unit) pairs. A line with fewer
		// fields is a benchmark's own log output or a failure.
		if len(f) < 4 || len(f)%2 != 0 {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		r := MicroResult{Package: pkg, Name: trimProcs(f[0]), Iterations: n}
		seen := false
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: bad value %q", f[0], f[i]))
				continue
			}
			switch f[i+1] {
			case "ns/op":
				r.NsPerOp, seen = v, true
			case "B/op":
				r.BytesPerOp = int64(v)
			case "allocs/op":
				r.AllocsPerOp = int64(v)
			}
		}
		if seen {
			res = append(res, r)
		}
	}
	return res, errors.Join(errs...)
}

// trimProcs drops the "-GOMAXPROCS" suffix of a benchmark name.
func trimProcs(name string) string {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return name
	}
	if _, err := strconv.Atoi(name[i+1:]); err != nil {
		return name
	}
	return name[:i]
}

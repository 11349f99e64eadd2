// Command bench measures wanreact in the netns lab and writes the results:
// OUT/benchmarks.md, OUT/benchmarks.json and the failover picture
// OUT/benchmarks-failover.svg. `make bench` runs it as
//
//	go run ./internal/bench -bin bin/wanreact -out docs
//
// It needs root (network namespaces). The measurements live in
// ./benchlib; this file only parses flags and writes files.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wanreact/wanreact/internal/bench/benchlib"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bin := fs.String("bin", "bin/wanreact", "wanreact binary to measure")
	out := fs.String("out", "docs", "directory for benchmarks.md, benchmarks.json and the picture")
	smoke := fs.Bool("smoke", false, "short run (a few trials, short windows), as in `make test`")
	trials := fs.Int("trials", 0, "failover trials per fault kind (default: 20, smoke: 2)")
	stability := fs.Duration("stability", 0, "run length per loss level (default: 120s, smoke: 20s)")
	sections := fs.String("sections", "", "comma-separated subset of: "+strings.Join(benchlib.Sections, ","))
	workdir := fs.String("workdir", "", "keep configs and event logs here (default: a temporary directory)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	opts := benchlib.FullOptions(*bin)
	if *smoke {
		opts = benchlib.SmokeOptions(*bin)
	}
	if *trials > 0 {
		opts.Trials = *trials
	}
	if *stability > 0 {
		opts.StabilityDuration = *stability
	}
	if *sections != "" {
		opts.Sections = strings.Split(*sections, ",")
	}
	opts.WorkDir = *workdir
	start := time.Now()
	opts.Logf = func(format string, a ...any) {
		fmt.Fprintf(stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, a...))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := benchlib.Run(ctx, opts)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	if ctx.Err() != nil {
		// An interrupted run is incomplete: leave the docs as they were.
		fmt.Fprintln(stderr, "bench: interrupted; nothing written")
		return 1
	}
	files, err := writeReport(rep, *out)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	for _, f := range files {
		fmt.Fprintln(stderr, "wrote", f)
	}
	for _, t := range rep.Targets {
		fmt.Fprintf(stderr, "target %-45s %-16s %-40s %s\n", t.Name, t.Target, t.Measured, map[bool]string{true: "met", false: "MISSED"}[t.Met])
	}
	if len(rep.Errors) > 0 {
		fmt.Fprintf(stderr, "bench: %d part(s) not measured:\n  %s\n", len(rep.Errors), strings.Join(rep.Errors, "\n  "))
		return 1
	}
	return 0
}

// writeReport writes the three files into dir, each atomically (a reader
// never sees half a document), and returns their paths.
func writeReport(rep *benchlib.Report, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	js, err := rep.JSON()
	if err != nil {
		return nil, fmt.Errorf("encoding the report: %w", err)
	}
	outputs := []struct {
		name string
		data []byte
	}{
		{"benchmarks.json", js},
		{"benchmarks.md", rep.Markdown()},
		{benchlib.PictureFile, rep.SVG()},
	}
	var written []string
	var errs []error
	for _, o := range outputs {
		p := filepath.Join(dir, o.name)
		if o.data == nil {
			// Nothing to draw in this run: a picture left from an
			// earlier run would not match the numbers next to it.
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		if err := writeAtomic(p, o.data); err != nil {
			errs = append(errs, err)
			continue
		}
		written = append(written, p)
	}
	return written, errors.Join(errs...)
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

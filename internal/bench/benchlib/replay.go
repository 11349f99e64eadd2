package benchlib

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/wanreact/wanreact/reactor"
)

// replayLogs feeds each recorded event log through a fresh reducer, timing
// every Apply, and checks with reactor.Replay that the decisions come out as
// recorded. These are the daemon's real inputs (probe results, link and
// route changes) in the proportions a running router sees.
func replayLogs(paths []string) (*ReducerResult, error) {
	res := &ReducerResult{}
	var lat []time.Duration
	var errs []error
	for _, p := range paths {
		if _, err := os.Stat(p + ".1"); err == nil {
			// Rotated: the file no longer starts with its config, so
			// a replay would start from the middle.
			continue
		}
		l, err := timeLog(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rr, err := reactor.Replay(f, nil)
		f.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("replay %s: %w", p, err))
			continue
		}
		res.Logs++
		res.Events += rr.Events
		res.Decisions += rr.Decisions
		res.Mismatches += len(rr.Mismatches)
		lat = append(lat, l...)
	}
	if res.Logs == 0 {
		return nil, errors.Join(append(errs, errors.New("no complete event log to replay"))...)
	}
	res.P50us = float64(durationPercentile(lat, 50)) / 1e3
	res.P99us = float64(durationPercentile(lat, 99)) / 1e3
	res.Maxus = float64(durationPercentile(lat, 100)) / 1e3
	return res, errors.Join(errs...)
}

// timeLog applies every input event of a log to a fresh reducer and
// returns each Apply's duration (decoding is not timed).
func timeLog(path string) ([]time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := reactor.New()
	var lat []time.Duration
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var h struct{ Source, Type string }
		if json.Unmarshal(sc.Bytes(), &h) != nil {
			continue
		}
		if h.Source == "action" || h.Source == "daemon" || (h.Source == "reactor" && h.Type == "decision") {
			continue
		}
		var e reactor.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		t0 := time.Now()
		s.Apply(e)
		lat = append(lat, time.Since(t0))
	}
	return lat, sc.Err()
}

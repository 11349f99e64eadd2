package benchlib

import (
	"math"
	"slices"
	"time"
)

// Stats summarises samples in milliseconds. P99 is the nearest-rank 99th
// percentile: with fewer than 100 samples it is the maximum, which is what
// a "p99 over 20 trials" honestly is.
type Stats struct {
	N      int     `json:"n"`
	Min    float64 `json:"min_ms"`
	Median float64 `json:"median_ms"`
	P99    float64 `json:"p99_ms"`
	Max    float64 `json:"max_ms"`
	Mean   float64 `json:"mean_ms"`
}

func floatStats(v []float64) Stats {
	if len(v) == 0 {
		return Stats{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	return Stats{
		N:      len(s),
		Min:    s[0],
		Median: percentile(s, 50),
		P99:    percentile(s, 99),
		Max:    s[len(s)-1],
		Mean:   sum / float64(len(s)),
	}
}

// percentile is the nearest-rank percentile p (0 < p <= 100) of sorted s,
// except that the median of an even count is the mean of the middle two.
func percentile(s []float64, p float64) float64 {
	if len(s) == 0 {
		return 0
	}
	if p == 50 && len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// durationPercentile is percentile for durations, in nanoseconds kept as
// a duration (for microsecond-scale latencies).
func durationPercentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

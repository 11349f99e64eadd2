package benchlib

import (
	"encoding/json"
	"time"
)

// Report is everything one Run measured. It is written as
// docs/benchmarks.json; the Markdown and the SVG are rendered from it.
type Report struct {
	Mode    string    `json:"mode"`
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
	Version string    `json:"wanreact_version"`
	Host    Host      `json:"host"`
	// Probe is the probe configuration the daemon ran with (its defaults).
	Probe *ProbeSettings `json:"probe,omitempty"`

	Failover  []FailoverResult  `json:"failover,omitempty"`
	Failback  []FailbackResult  `json:"failback,omitempty"`
	Pictures  []Panel           `json:"pictures,omitempty"`
	Stability []StabilityResult `json:"stability,omitempty"`
	Cost      []CostResult      `json:"cost,omitempty"`
	Startup   *StartupResult    `json:"startup,omitempty"`
	Storm     *StormResult      `json:"storm,omitempty"`
	Reducer   *ReducerResult    `json:"reducer_replay,omitempty"`
	Micro     []MicroResult     `json:"micro,omitempty"`

	Targets []TargetCheck `json:"targets"`
	// Errors lists the sections (or parts) that could not be measured.
	Errors []string `json:"errors,omitempty"`
}

// JSON renders the report, indented.
func (r *Report) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ProbeSettings are the effective probe settings of ISP 1.
type ProbeSettings struct {
	Targets     int     `json:"targets"`
	IntervalMs  float64 `json:"interval_ms"`
	TimeoutMs   float64 `json:"timeout_ms"`
	DownAfter   int     `json:"down_after"`
	UpAfter     int     `json:"up_after"`
	Window      int     `json:"window"`
	DegradedPct float64 `json:"degraded_loss_pct"`
	RecoverPct  float64 `json:"recover_loss_pct"`
}

// FailoverResult summarises the trials of one fault kind on ISP 1.
type FailoverResult struct {
	Kind        string `json:"kind"`
	Description string `json:"description"`
	Trials      int    `json:"trials"`
	// Outage is what the 200 packets/s flow saw (see faultOutage).
	Outage Stats `json:"outage"`
	// Detect is from the fault to the daemon's decision that took ISP 1
	// out of the active set (event log time).
	Detect Stats `json:"detect"`
	// Unrecovered counts trials where the flow had not recovered when the
	// fault was removed; their outage is a lower bound.
	Unrecovered int           `json:"unrecovered"`
	Samples     []TrialSample `json:"samples"`
}

// TrialSample is one trial; durations in milliseconds.
type TrialSample struct {
	OutageMs    float64 `json:"outage_ms"`
	LostPackets int     `json:"bad_packets"`
	Recovered   bool    `json:"recovered"`
	DetectMs    float64 `json:"detect_ms"`
	Detected    bool    `json:"detected"`
	FaultCallMs float64 `json:"fault_call_ms"`
	FailbackMs  float64 `json:"failback_outage_ms"`
	// ReturnMs is until new connections went through isp1 again.
	ReturnMs float64 `json:"return_ms"`
	Returned bool    `json:"returned"`
	// FlowMovedBack: the long-lived flow went back to isp1 too.
	FlowMovedBack bool    `json:"flow_moved_back"`
	BackDetectMs  float64 `json:"failback_detect_ms"`
}

// FailbackResult summarises the returns to ISP 1 after one fault kind was
// removed.
type FailbackResult struct {
	After  string `json:"after"`
	Trials int    `json:"trials"`
	// Return is from the fault's removal to the first new connection
	// carried by ISP 1 again: proof of life (up_after replies) plus the
	// switch.
	Return Stats `json:"return"`
	// Detect is from the removal to the decision putting ISP 1 back.
	Detect Stats `json:"detect"`
	// Outage is the longest loss the long-lived flow saw meanwhile.
	Outage      Stats `json:"outage"`
	NotReturned int   `json:"not_returned"`
	// FlowMovedBack counts trials whose long-lived flow went back to
	// ISP 1 (with balancing, established connections stay pinned).
	FlowMovedBack int `json:"flow_moved_back"`
}

// Panel is one failover drawn in the picture: packets per ISP over time.
type Panel struct {
	Title string `json:"title"`
	Kind  string `json:"kind"`
	// FaultMs and DecisionMs are offsets from Series.Start; DecisionMs is
	// negative when no decision was seen.
	FaultMs    float64 `json:"fault_ms"`
	DecisionMs float64 `json:"decision_ms"`
	// RestoreMs is when the fault was removed (0: after the window).
	RestoreMs float64 `json:"restore_ms,omitempty"`
	OutageMs  float64 `json:"outage_ms"`
	Series    series  `json:"series"`
}

// StabilityResult is ISP 1 under random loss for a while.
type StabilityResult struct {
	Loss    float64 `json:"loss"`
	Seconds float64 `json:"seconds"`
	// Transitions are ISP 1's health changes; ActiveChanges the changes
	// of the active set (what users feel as a switch).
	Transitions   int `json:"transitions"`
	ActiveChanges int `json:"active_changes"`
	// PerHour scales Transitions to an hour: Transitions * 3600 / Seconds.
	PerHour       float64 `json:"transitions_per_hour"`
	ActivePerHour float64 `json:"active_changes_per_hour"`
	// Max40s is the most transitions in any 40 s window, the form the
	// target is stated in.
	Max40s int `json:"max_transitions_40s"`
	// ActiveShare is the fraction of the time ISP 1 was in the active set.
	ActiveShare float64  `json:"isp1_active_share"`
	FinalState  string   `json:"final_state"`
	Timeline    []string `json:"timeline"`
}

// CostResult is the daemon's idle cost with some number of WANs.
type CostResult struct {
	WANs          int `json:"wans"`
	TargetsPerWAN int `json:"targets_per_wan"`
	// ProbeInterval is set when it is not the default (the baseline).
	ProbeInterval  string  `json:"probe_interval,omitempty"`
	ProbesPerSec   float64 `json:"probes_per_second"`
	WindowSeconds  float64 `json:"window_seconds"`
	CPUPercent     float64 `json:"cpu_percent_of_one_core"`
	CPUSeconds     float64 `json:"cpu_seconds"`
	RSSMB          float64 `json:"rss_mb"`
	PeakRSSMB      float64 `json:"peak_rss_mb"`
	UpAfterSeconds float64 `json:"all_up_after_seconds"`
}

// StartupResult times daemon starts in the 2-ISP lab.
type StartupResult struct {
	Runs int `json:"runs"`
	// FirstDecision is from process start to the first decision line of
	// the event log (routing chosen, WANs presumed working).
	FirstDecision Stats `json:"first_decision"`
	// ISP1Up is from process start to ISP 1 proven up by probes.
	ISP1Up Stats `json:"isp1_up"`
}

// StormResult is the netlink storm.
type StormResult struct {
	Routes  int `json:"routes"`
	Changes int `json:"changes"`
	// Daemon: the storm with the daemon running and nothing else.
	StormMs       float64  `json:"storm_ms"`
	ChangesPerSec float64  `json:"changes_per_second"`
	DaemonCPUMs   float64  `json:"daemon_cpu_ms"`
	DaemonCPUPct  float64  `json:"daemon_cpu_percent"`
	DaemonResyncs int      `json:"daemon_resyncs"`
	StateEqual    bool     `json:"state_equal"`
	StateDiff     []string `json:"state_diff,omitempty"`
	// A carrier cut on ISP 1 in the middle of a second storm.
	CutOutageMs float64 `json:"cut_outage_ms"`
	CutDetectMs float64 `json:"cut_detect_ms"`
	CutOK       bool    `json:"cut_recovered"`
	// InProcess: sources/netlinksrc with a small receive buffer feeding a
	// reducer in the bench process during a third storm.
	InProcess *InProcessStorm `json:"in_process,omitempty"`
}

// InProcessStorm is the resync part of the storm.
type InProcessStorm struct {
	RcvBuf  int    `json:"rcvbuf_bytes"`
	Events  int    `json:"events"`
	Resyncs uint64 `json:"resyncs"`
	// Reducer latency per event (State.Apply), microseconds.
	ReducerP50us float64 `json:"reducer_p50_us"`
	ReducerP99us float64 `json:"reducer_p99_us"`
	ReducerMaxus float64 `json:"reducer_max_us"`
	// RoutesLeft were left in the storm table on purpose; the source's
	// view must list exactly those.
	RoutesLeft   int      `json:"routes_left"`
	ViewMatches  bool     `json:"view_matches_kernel"`
	ViewDiff     []string `json:"view_diff,omitempty"`
	DesiredEqual bool     `json:"desired_equal"`
	SettleMs     float64  `json:"settle_ms"`
}

// ReducerResult is the replay of the daemon's recorded event logs through
// a fresh reducer, timed per event.
type ReducerResult struct {
	Logs       int     `json:"logs"`
	Events     int     `json:"events"`
	Decisions  int     `json:"decisions"`
	Mismatches int     `json:"mismatches"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	Maxus      float64 `json:"max_us"`
}

// MicroResult is one Go benchmark.
type MicroResult struct {
	Package     string  `json:"package"`
	Name        string  `json:"name"`
	Iterations  int64   `json:"iterations"`
	NsPerOp     float64 `json:"ns_per_op"`
	BytesPerOp  int64   `json:"bytes_per_op"`
	AllocsPerOp int64   `json:"allocs_per_op"`
}

// TargetCheck compares a measurement with the target.
type TargetCheck struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
	// Note explains a miss (likely cause) or qualifies a result.
	Note string `json:"note,omitempty"`
}

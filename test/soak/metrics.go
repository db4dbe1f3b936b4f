package soak

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// staleMetric counts events a sink skipped because the store already held
// that position or a later one for the key: re-deliveries after a crash or
// rebalance, and capture's re-sends. These are the duplicates the sinks
// absorbed.
const staleMetric = "cdcsync_sink_events_skipped_total"

// scrapeSink adds sink i's stale-skip counters to r.absorbed; it is called
// just before the process is stopped (its counters die with it) and at the
// end for the processes still running.
func (r *rig) scrapeSink(i int) {
	counts, err := scrapeStale(r.sinkAt[i])
	if err != nil {
		r.t.Logf("scrape sink-%c metrics: %v (its duplicates are not counted)", 'a'+i, err)
		return
	}
	for sink, v := range counts {
		r.absorbed[sink] += v
	}
}

// scrapeStale reads the stale-skip counters of the sink serving /metrics on
// addr, by sink (inventory, redis).
func scrapeStale(addr string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get /metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read /metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get /metrics: %s", resp.Status)
	}
	return sumCounter(body, staleMetric, map[string]string{"reason": "stale"}, "sink")
}

// sumCounter reads the Prometheus text format and sums the samples of
// metric name whose labels include match, by the value of label by.
func sumCounter(body []byte, name string, match map[string]string, by string) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || !strings.HasPrefix(rest, "{") {
			continue
		}
		end := strings.LastIndex(rest, "}")
		if end < 0 {
			return nil, fmt.Errorf("metrics line %q: no closing brace", line)
		}
		labels, err := parseLabels(rest[1:end])
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		matched := true
		for k, v := range match {
			if labels[k] != v {
				matched = false
			}
		}
		if !matched {
			continue
		}
		fields := strings.Fields(rest[end+1:])
		if len(fields) == 0 {
			return nil, fmt.Errorf("metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		out[labels[by]] += v
	}
	return out, sc.Err()
}

// parseLabels parses `a="x",b="y"` (label values escape \, " and \n).
func parseLabels(s string) (map[string]string, error) {
	labels := map[string]string{}
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || len(s) < eq+2 || s[eq+1] != '"' {
			return nil, fmt.Errorf("bad labels %q", s)
		}
		name := strings.TrimSpace(s[:eq])
		var val strings.Builder
		i := eq + 2
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(s[i])
				}
				continue
			}
			val.WriteByte(s[i])
		}
		if i >= len(s) {
			return nil, fmt.Errorf("unterminated label value in %q", s)
		}
		labels[name] = val.String()
		s = strings.TrimPrefix(strings.TrimSpace(s[i+1:]), ",")
	}
	return labels, nil
}

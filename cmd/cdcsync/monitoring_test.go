package main

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const (
	dashboardFile  = deployDir + "/grafana/cdcsync-dashboard.json"
	alertsDir      = deployDir + "/prometheus"
	alertsFile     = "cdcsync-alerts.yml"
	alertsTestFile = "cdcsync-alerts_test.yml"
)

// The shipped alert rules pass `promtool check rules` and their unit
// tests (`promtool test rules`): each alert fires when it should and not
// otherwise. promtool comes with Debian's prometheus package, which
// scripts/ensure-deps.sh installs.
func TestMonitoringAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus; make deps installs it): alert rules not tested")
	}
	for _, args := range [][]string{{"check", "rules", alertsFile}, {"test", "rules", alertsTestFile}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = alertsDir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// Every metric the dashboard and the alert rules use is one cdcsync
// exports: a renamed metric must not leave an empty panel or an alert that
// can never fire.
func TestMonitoringUsesExistingMetrics(t *testing.T) {
	exported := exportedMetrics(t)
	var exprs []string
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	b, err = os.ReadFile(filepath.Join(alertsDir, alertsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	used := map[string]bool{}
	name := regexp.MustCompile(`\bcdcsync_[a-z0-9_]+`)
	for _, e := range exprs {
		for _, m := range name.FindAllString(e, -1) {
			used[m] = true
		}
	}
	if len(used) < 10 {
		t.Fatalf("only %d metrics used: %v", len(used), used)
	}
	for m := range used {
		base := m
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(m, suffix); ok && exported[b] {
				base = b
			}
		}
		if !exported[base] {
			t.Errorf("%s is used by the dashboard or the alerts but no cdcsync metric has that name", m)
		}
	}
}

// exportedMetrics collects the metric names the code registers, from the
// non-test Go sources: full names in string literals ("cdcsync_…", as
// prometheus.NewDesc and Opts.Name hold them) and Namespace, Subsystem and
// Name joined.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	full := regexp.MustCompile(`"(cdcsync_[a-z0-9_]+)"`)
	parts := regexp.MustCompile(`Namespace:\s*"(\w+)",\s*Subsystem:\s*"(\w+)",\s*Name:\s*"(\w+)"`)
	out := map[string]bool{}
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && slices.Contains([]string{".git", "test", "deploy"}, d.Name()) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range full.FindAllSubmatch(b, -1) {
			out[string(m[1])] = true
		}
		for _, m := range parts.FindAllSubmatch(b, -1) {
			out[string(m[1])+"_"+string(m[2])+"_"+string(m[3])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
)

// result is one finished run of the binary.
type result struct {
	code           int
	stdout, stderr string
}

// runBinary runs the built cdcsync with only PATH and HOME from the test's
// environment plus env, so that CDCSYNC_ variables of whoever runs the
// tests cannot leak in.
func runBinary(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(testenv.BuildCdcsync(t), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("cdcsync %v: %v", args, err)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("cdcsync %v did not exit within 30s; stderr:\n%s", args, stderr.String())
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

func TestUsage(t *testing.T) {
	r := runBinary(t, nil)
	if r.code != 2 || !strings.Contains(r.stderr, "Usage: cdcsync <command>") {
		t.Errorf("no arguments: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		r := runBinary(t, nil, args...)
		if r.code != 0 {
			t.Errorf("%v: exit %d", args, r.code)
		}
		for _, c := range commands() {
			listed := strings.Contains(r.stdout, "\n  "+c.Name+" ")
			if listed == c.Hidden {
				t.Errorf("%v: command %s listed=%v, hidden=%v:\n%s", args, c.Name, listed, c.Hidden, r.stdout)
			}
		}
		if !strings.Contains(r.stdout, "dev-broker  DEVELOPMENT ONLY") {
			t.Errorf("dev-broker is not labelled as development only:\n%s", r.stdout)
		}
	}
}

func TestUnknownCommandAndArguments(t *testing.T) {
	r := runBinary(t, nil, "captur")
	if r.code != 2 || r.stderr != "cdcsync: unknown command \"captur\"; run 'cdcsync help'\n" {
		t.Errorf("unknown command: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runBinary(t, []string{"CDCSYNC_SOURCE_URL=postgres://db/orders"}, "capture", "now")
	if r.code != 2 || !strings.HasPrefix(r.stderr, `cdcsync capture: unexpected argument "now"`) {
		t.Errorf("unexpected argument: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestPendingCommandsSaySo(t *testing.T) {
	for _, c := range commands() {
		if !strings.HasSuffix(c.Summary, "(in progress)") {
			continue
		}
		r := runBinary(t, nil, c.Name)
		if r.code != 2 || r.stderr != "cdcsync "+c.Name+": not implemented yet\n" {
			t.Errorf("%s: exit %d, stderr %q", c.Name, r.code, r.stderr)
		}
	}
}

func TestBadConfigurationExits2WithOneLine(t *testing.T) {
	const src = "CDCSYNC_SOURCE_URL=postgres://cdc:hunter2@db.example/orders"
	cases := []struct {
		cmd  string
		env  []string
		want string
	}{
		{"capture", nil, "CDCSYNC_SOURCE_URL: required but not set"},
		{"capture", []string{src, "CDCSYNC_SNAPSHOT=sometimes"}, `CDCSYNC_SNAPSHOT: must be one of "initial", "never", "when_needed", got "sometimes"`},
		{"capture", []string{src, "CDCSYNC_HEARTBEAT_INTERVAL=10"}, `CDCSYNC_HEARTBEAT_INTERVAL: must be a duration such as 500ms, 10s or 2m, got "10"`},
		{"capture", []string{src, "CDCSYNC_MAX_IN_FLIGHT=many"}, `CDCSYNC_MAX_IN_FLIGHT: must be an integer, got "many"`},
		{"capture", []string{"CDCSYNC_SOURCE_URL=mysql://cdc:hunter2@db/orders"}, `CDCSYNC_SOURCE_URL: must be a postgres:// or postgresql:// URL, got scheme "mysql"`},
		{"capture", []string{src, "CDCSYNC_TABLES=orders"}, `CDCSYNC_TABLES: entry "orders" must be schema.table, e.g. public.orders`},
		{"capture", []string{src, "CDCSYNC_SLOT=Bad-Slot"}, `CDCSYNC_SLOT: must be 1 to 63 characters of a-z, 0-9 and _, got "Bad-Slot"`},
		{"capture", []string{src, "CDCSYNC_KAFKA_BROKERS=kafka"}, `CDCSYNC_KAFKA_BROKERS: broker "kafka": not host:port`},
		{"capture", []string{src, "CDCSYNC_KAFKA_SASL_MECHANISM=SCRAM-SHA-256"}, `CDCSYNC_KAFKA_SASL_USER: required with CDCSYNC_KAFKA_SASL_MECHANISM=SCRAM-SHA-256, but not set`},
		{"capture", []string{src, "CDCSYNC_KAFKA_TLS=true", "CDCSYNC_KAFKA_TLS_CA_FILE=/nonexistent/ca.pem"}, `CDCSYNC_KAFKA_TLS_CA_FILE: file "/nonexistent/ca.pem" does not exist`},
		{"capture", []string{src, "CDCSYNC_LOG_FORMAT=xml"}, `CDCSYNC_LOG_FORMAT: must be "text" or "json", got "xml"`},
		{"sink", nil, "CDCSYNC_INVENTORY_URL: required when CDCSYNC_SINKS includes inventory, but not set"},
		{"sink", []string{"CDCSYNC_SINKS=inventory,mongo"}, `CDCSYNC_SINKS: unknown sink "mongo"; the sinks are inventory and redis`},
		{"sink", []string{"CDCSYNC_SINKS=redis", "CDCSYNC_REDIS_URL=http://:hunter2@cache:6379"}, `CDCSYNC_REDIS_URL: must be a redis:// or rediss:// URL, got scheme "http"`},
		// Only the inventory sink, with a Redis URL (the availability cache)
		// that does not parse: the url package's error would quote it.
		{"sink", []string{"CDCSYNC_SINKS=inventory", "CDCSYNC_INVENTORY_URL=postgres://inv@db/inventory", "CDCSYNC_REDIS_URL=redis://:hunter2#x@cache:6379/0"}, `CDCSYNC_REDIS_URL: is not a valid URL; percent-encode special characters in the password`},
		{"verify", []string{src, "CDCSYNC_SINKS=inventory", "CDCSYNC_INVENTORY_URL=postgres://inv@db/inventory", "CDCSYNC_REDIS_URL=redis://:hunter2@cache:6379/0?dial_timeout=hunter2"}, `CDCSYNC_REDIS_URL: invalid dial_timeout duration: time: invalid duration "xxxxx"`},
		{"sink", []string{"CDCSYNC_SINKS=redis", "CDCSYNC_SINK_BATCH_SIZE=abc"}, `CDCSYNC_SINK_BATCH_SIZE: must be an integer, got "abc"`},
		{"sink", []string{"CDCSYNC_SINKS=redis", "CDCSYNC_KAFKA_TLS=maybe"}, `CDCSYNC_KAFKA_TLS: must be true or false, got "maybe"`},
		{"dev-broker", []string{"CDCSYNC_DEV_BROKER_TOPICS=orders:x"}, `CDCSYNC_DEV_BROKER_TOPICS: topic "orders": partitions must be a positive integer, got "x"`},
	}
	for _, tc := range cases {
		r := runBinary(t, tc.env, tc.cmd)
		want := "cdcsync: " + tc.want + "\n"
		if r.code != 2 || r.stderr != want {
			t.Errorf("%s %v:\n exit %d, stderr %q\nwant exit 2, stderr %q", tc.cmd, tc.env, r.code, r.stderr, want)
		}
		if strings.Contains(r.stdout+r.stderr, "hunter2") {
			t.Errorf("%s %v: output shows the password", tc.cmd, tc.env)
		}
	}
}

func TestHelpListsEveryVariableWithDefault(t *testing.T) {
	secrets := []string{
		"CDCSYNC_SOURCE_URL=postgres://cdc:hunter2@db/orders",
		"CDCSYNC_INVENTORY_URL=host=inv password=hunter2",
		"CDCSYNC_REDIS_URL=redis://:hunter2@cache:6379/0",
		"CDCSYNC_KAFKA_SASL_PASSWORD=hunter2",
	}
	specs := map[string]any{"capture": &config.Capture{}, "sink": &config.Sink{}, "dev-broker": &config.DevBroker{}}
	for name, spec := range specs {
		for _, flag := range []string{"--help", "-h"} {
			r := runBinary(t, secrets, name, flag)
			if r.code != 0 {
				t.Fatalf("%s %s: exit %d: %s", name, flag, r.code, r.stderr)
			}
			for _, v := range config.Vars(spec) {
				want := "  " + v.Name + "  " + v.Type + "  default: " + v.Default + "\n"
				switch {
				case v.Required:
					want = "  " + v.Name + "  " + v.Type + "  (required)\n"
				case v.Default == "":
					want = "  " + v.Name + "  " + v.Type + "  default: (empty)\n"
				}
				if !strings.Contains(r.stdout, want) {
					t.Errorf("%s %s lacks %q", name, flag, want)
				}
			}
			if strings.Contains(r.stdout, "hunter2") {
				t.Errorf("%s %s shows a secret:\n%s", name, flag, r.stdout)
			}
		}
	}
}

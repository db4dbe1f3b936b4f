package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cdcsync/cdcsync/config"
)

func TestJSONAtLevel(t *testing.T) {
	var buf bytes.Buffer
	logger, err := New(config.Log{Format: "json", Level: "warn"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	logger.Info("dropped")
	logger.Warn("kept", "slot", "cdcsync")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one line at warn, got %q", buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("not JSON: %v: %s", err, lines[0])
	}
	if rec["msg"] != "kept" || rec["level"] != "WARN" || rec["slot"] != "cdcsync" {
		t.Errorf("record = %v", rec)
	}
}

func TestTextDebug(t *testing.T) {
	var buf bytes.Buffer
	logger, err := New(config.Log{Format: "text", Level: "DEBUG"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	logger.Debug("hello", "n", 1)
	if !strings.Contains(buf.String(), "level=DEBUG msg=hello n=1") {
		t.Errorf("got %q", buf.String())
	}
}

func TestRejectsUnknown(t *testing.T) {
	if _, err := New(config.Log{Format: "text", Level: "loud"}, &bytes.Buffer{}); err == nil {
		t.Error("level loud accepted")
	}
	if _, err := New(config.Log{Format: "xml", Level: "info"}, &bytes.Buffer{}); err == nil {
		t.Error("format xml accepted")
	}
}

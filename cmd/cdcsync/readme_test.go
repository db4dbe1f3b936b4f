package main

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/cdcsync/cdcsync/config"
)

var update = flag.Bool("update", false, "rewrite the generated configuration tables in README.md")

const (
	readmePath  = "../../README.md"
	beginMarker = "<!-- BEGIN generated configuration: go run ./cmd/cdcsync help-env --markdown -->\n"
	endMarker   = "<!-- END generated configuration -->"
)

// The README's configuration section is the output of help-env, so that it
// lists every variable of every command with its current default.
func TestREADMEConfigurationIsCurrent(t *testing.T) {
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	begin := strings.Index(text, beginMarker)
	end := strings.Index(text, endMarker)
	if begin < 0 || end < begin {
		t.Fatalf("README.md lacks the generated configuration markers")
	}
	var buf bytes.Buffer
	if err := writeEnvMarkdown(&buf, commands()); err != nil {
		t.Fatal(err)
	}
	want := buf.String()
	got := text[begin+len(beginMarker) : end]
	if got == want {
		return
	}
	if *update {
		text = text[:begin+len(beginMarker)] + want + text[end:]
		if err := os.WriteFile(readmePath, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("README.md configuration tables rewritten")
		return
	}
	t.Errorf("README.md configuration tables are out of date; run `make readme` " +
		"(go test ./cmd/cdcsync -run TestREADMEConfigurationIsCurrent -update)")
}

// Independently of the generator: every variable of capture and sink is
// named in the README.
func TestREADMENamesEveryVariable(t *testing.T) {
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range []any{&config.Capture{}, &config.Sink{}, &config.DevBroker{}} {
		for _, v := range config.Vars(spec) {
			if !bytes.Contains(readme, []byte("`"+v.Name+"`")) {
				t.Errorf("README.md does not list %s", v.Name)
			}
		}
	}
}

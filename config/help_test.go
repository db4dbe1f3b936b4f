package config

import (
	"bytes"
	"strings"
	"testing"
)

func TestWriteHelpListsEveryVariable(t *testing.T) {
	for _, spec := range []any{&Capture{}, &Sink{}, &DevBroker{}, &Status{}, &Verify{}, &Demo{}} {
		var buf bytes.Buffer
		if err := WriteHelp(&buf, spec, nil); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		for _, v := range Vars(spec) {
			if !strings.Contains(out, "  "+v.Name+"  ") {
				t.Errorf("%T help misses %s", spec, v.Name)
			}
			if v.Desc == "" {
				t.Errorf("%s has no desc tag", v.Name)
			}
		}
	}
}

func TestWriteHelpShowsDefaultsAndRequired(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteHelp(&buf, &Capture{}, nil); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"CDCSYNC_SOURCE_URL  string  (required)",
		"CDCSYNC_SNAPSHOT  string  default: initial",
		"CDCSYNC_HEARTBEAT_INTERVAL  duration  default: 10s",
		"CDCSYNC_KAFKA_BROKERS  list  default: localhost:9092",
		"CDCSYNC_KAFKA_SASL_USER  string  default: (empty)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteHelpNeverShowsSecrets(t *testing.T) {
	env := map[string]string{
		"CDCSYNC_SOURCE_URL":          "postgres://cdc:hunter2@db/orders",
		"CDCSYNC_KAFKA_SASL_PASSWORD": "hunter2",
		"CDCSYNC_SLOT":                "myslot",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	var buf bytes.Buffer
	if err := WriteHelp(&buf, &Capture{}, lookup); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, "hunter2") {
		t.Errorf("help shows a secret:\n%s", out)
	}
	for _, want := range []string{"current: postgres://cdc:xxxxx@db/orders", "current: (set, hidden)", "current: myslot"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteMarkdown(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteMarkdown(&buf, &Capture{}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"| variable | default | description |",
		"| `CDCSYNC_SOURCE_URL` | required | order database, postgres URL |",
		"| `CDCSYNC_TOPIC_PREFIX` | `cdc` | topic per table: &lt;prefix&gt;.&lt;schema&gt;.&lt;table&gt; |",
		"| `CDCSYNC_KAFKA_TLS_CA_FILE` | — |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
}

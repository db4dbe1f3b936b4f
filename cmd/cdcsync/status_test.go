package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func TestStatusCommand(t *testing.T) {
	e := startServices(t)
	s := newOpsStores(t, e)
	if err := e.PG.Exec(context.Background(), s.src,
		`SELECT pg_create_logical_replication_slot('cdcsync', 'pgoutput')`); err != nil {
		t.Fatal(err)
	}
	if err := e.Kafka.CreateTopic("cdc.public.orders", 3); err != nil {
		t.Fatal(err)
	}
	r := runBinary(t, s.env(), "status")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"SLOT", "cdcsync ", "TOPIC", "cdc.public.orders", "SINK",
		"cdcsync-inventory", "cdcsync-redis", "sink redis: 0 records behind"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	r = runBinary(t, s.env(), "status", "--json")
	var report struct {
		Slot struct {
			Name   string `json:"name"`
			Exists bool   `json:"exists"`
		} `json:"slot"`
		Topics []struct {
			Partitions []struct{} `json:"partitions"`
		} `json:"topics"`
		Sinks []struct {
			Group string `json:"group"`
		} `json:"sinks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &report); err != nil || r.code != 0 {
		t.Fatalf("--json: exit %d, %v: %s", r.code, err, r.stdout)
	}
	if !report.Slot.Exists || report.Slot.Name != "cdcsync" || len(report.Topics) != 1 ||
		len(report.Topics[0].Partitions) != 3 || len(report.Sinks) != 2 || report.Sinks[1].Group != "cdcsync-redis" {
		t.Errorf("--json: %s", r.stdout)
	}

	r = runBinary(t, append(s.env(), "CDCSYNC_KAFKA_BROKERS=127.0.0.1:1"), "status")
	if r.code != 1 || !strings.Contains(r.stderr, "cdcsync status: connect to kafka brokers") {
		t.Errorf("unreachable broker: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runBinary(t, s.env(), "status", "--yaml")
	if r.code != 2 || !strings.Contains(r.stderr, "flag provided but not defined: -yaml") {
		t.Errorf("unknown flag: exit %d, stderr %q", r.code, r.stderr)
	}
}

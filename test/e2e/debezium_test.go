package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
	"github.com/cdcsync/cdcsync/pipeline/debezium"
)

// TestOrdersDebeziumEncoding is the orders workload (5 s of writers) with
// CDCSYNC_ENCODING=debezium and transaction metadata: the sinks read
// Debezium's records and verify ends without drift. Then kcat, a
// librdkafka client that is not ours, reads the table topic and the
// transaction topic, and every record must be a Debezium envelope:
// {"schema":…,"payload":…} with Debezium's schema names, transaction
// blocks on streamed events, BEGIN/END records whose counts match them.
func TestOrdersDebeziumEncoding(t *testing.T) {
	p := runOrdersWorkload(t, 5*time.Second, func(c *config.Capture, _ *config.Sink) {
		c.Encoding.Encoding = "debezium"
		c.Encoding.TransactionMetadata = true
		// Capture's partition watermarks (null-valued records keyed
		// {"cdcsync.watermark":N}) are not Debezium records; a topic meant
		// for Debezium consumers goes without them (see README).
		c.WatermarkInterval = 0
	})
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not installed (scripts/ensure-deps.sh installs the Debian package kcat when run as root): the Kafka client check is skipped")
	}
	e := testenv.RequireEnv(t, env)
	prefix := p.captureCfg.TopicPrefix
	brokers := strings.Join(e.Kafka.Brokers(), ",")

	table := kcatRead(t, kcat, brokers, pipeline.Topic(prefix, "public", "orders"))
	txs := kcatRead(t, kcat, brokers, debezium.TransactionTopic(prefix))
	if len(table) == 0 || len(txs) == 0 {
		t.Fatalf("kcat read %d table records and %d transaction records", len(table), len(txs))
	}

	type envelope struct {
		Schema struct {
			Name   string `json:"name"`
			Fields []struct {
				Field string `json:"field"`
				Name  string `json:"name"`
			} `json:"fields"`
		} `json:"schema"`
		Payload struct {
			After       map[string]json.RawMessage `json:"after"`
			Before      map[string]json.RawMessage `json:"before"`
			Source      map[string]json.RawMessage `json:"source"`
			Transaction *pipeline.Transaction      `json:"transaction"`
			Op          string                     `json:"op"`
		} `json:"payload"`
	}
	type keyRecord struct {
		Schema struct {
			Name string `json:"name"`
		} `json:"schema"`
		Payload map[string]json.Number `json:"payload"`
	}
	events := map[string]int64{} // transaction id -> data events
	ops := map[string]int{}
	tombstones := 0
	for _, r := range table {
		var k keyRecord
		if err := json.Unmarshal([]byte(r.Key), &k); err != nil || k.Schema.Name != pipeline.Topic(prefix, "public", "orders")+".Key" || k.Payload["id"] == "" {
			t.Fatalf("offset %d: key %s is not a Debezium key (%v)", r.Offset, r.Key, err)
		}
		if r.Payload == nil {
			tombstones++
			continue
		}
		var env envelope
		if err := json.Unmarshal([]byte(*r.Payload), &env); err != nil {
			t.Fatalf("offset %d: value does not decode: %v", r.Offset, err)
		}
		if env.Schema.Name != pipeline.Topic(prefix, "public", "orders")+".Envelope" {
			t.Fatalf("offset %d: schema name %q", r.Offset, env.Schema.Name)
		}
		var fields []string
		for _, f := range env.Schema.Fields {
			fields = append(fields, f.Field+"/"+f.Name)
		}
		wantFields := "before/" + pipeline.Topic(prefix, "public", "orders") + ".Value after/" + pipeline.Topic(prefix, "public", "orders") +
			".Value source/io.debezium.connector.postgresql.Source transaction/event.block op/ ts_ms/ ts_us/ ts_ns/"
		if strings.Join(fields, " ") != wantFields {
			t.Fatalf("offset %d: envelope fields %q, want %q", r.Offset, fields, wantFields)
		}
		pl := env.Payload
		ops[pl.Op]++
		if string(pl.Source["connector"]) != `"postgresql"` || string(pl.Source["version"]) != `"`+pipeline.DebeziumVersion+`"` {
			t.Fatalf("offset %d: source %v", r.Offset, pl.Source)
		}
		switch pl.Op {
		case "r":
			if pl.Transaction != nil {
				t.Errorf("offset %d: snapshot row with a transaction block", r.Offset)
			}
		case "c", "u", "d":
			if pl.Transaction == nil {
				t.Fatalf("offset %d: streamed %s event without a transaction block", r.Offset, pl.Op)
			}
			events[pl.Transaction.ID]++
		default:
			t.Fatalf("offset %d: op %q", r.Offset, pl.Op)
		}
	}
	if ops["r"] == 0 || ops["c"] == 0 || ops["u"] == 0 || ops["d"] == 0 || tombstones == 0 {
		t.Errorf("ops read by kcat %v, tombstones %d: want every kind", ops, tombstones)
	}

	type txRecord struct {
		Payload struct {
			Status          string `json:"status"`
			ID              string `json:"id"`
			EventCount      *int64 `json:"event_count"`
			DataCollections []struct {
				Name  string `json:"data_collection"`
				Count int64  `json:"event_count"`
			} `json:"data_collections"`
		} `json:"payload"`
	}
	begins := map[string]bool{}
	ends := 0
	for _, r := range txs {
		if r.Payload == nil {
			t.Fatalf("transaction topic offset %d: null value", r.Offset)
		}
		var tr txRecord
		if err := json.Unmarshal([]byte(*r.Payload), &tr); err != nil {
			t.Fatalf("transaction record %s: %v", *r.Payload, err)
		}
		switch pl := tr.Payload; pl.Status {
		case "BEGIN":
			begins[pl.ID] = true
		case "END":
			ends++
			if !begins[pl.ID] {
				t.Errorf("END %s without its BEGIN before it", pl.ID)
			}
			if pl.EventCount == nil || *pl.EventCount != events[pl.ID] || len(pl.DataCollections) != 1 ||
				pl.DataCollections[0].Name != "public.orders" || pl.DataCollections[0].Count != events[pl.ID] {
				t.Errorf("END %s: %s; the table topic has %d events of it", pl.ID, *r.Payload, events[pl.ID])
			}
		default:
			t.Fatalf("transaction record status %q", pl.Status)
		}
	}
	if ends == 0 || ends != len(events) {
		t.Errorf("%d END records for %d transactions with events", ends, len(events))
	}
	t.Logf("kcat read %d table records (%v, %d tombstones) and %d transaction records", len(table), ops, tombstones, len(txs))
}

// kcatRecord is one line of `kcat -J`.
type kcatRecord struct {
	Partition int32   `json:"partition"`
	Offset    int64   `json:"offset"`
	Key       string  `json:"key"`
	Payload   *string `json:"payload"`
}

// kcatRead consumes every partition of topic from the beginning to its end
// with kcat and returns the records.
func kcatRead(t *testing.T, kcat, brokers, topic string) []kcatRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q", "-J")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		errText := stderr.String()
		if len(errText) > 6000 {
			errText = errText[len(errText)-6000:]
		}
		t.Fatalf("kcat on %s: %v: %s", topic, err, errText)
	}
	var recs []kcatRecord
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		var r kcatRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("kcat line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return recs
}

package capture

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/cdcsync/cdcsync/internal/testenv"
	"github.com/cdcsync/cdcsync/pipeline"
	"github.com/cdcsync/cdcsync/pipeline/debezium"
)

// TestTransactionMetadata follows TransactionMetadataIT: one transaction
// inserting into two tables gives BEGIN, the data events numbered in the
// transaction (total_order) and per table (data_collection_order), and
// END with the event counts, its id "<txId>:<LSN>" on all of them. Both
// encodings carry the block; the transaction topic is <prefix>.transaction.
func TestTransactionMetadata(t *testing.T) {
	e := testenv.RequireEnv(t, env)
	for _, encoding := range []string{"debezium", "cdcsync"} {
		t.Run(encoding, func(t *testing.T) {
			db := e.PG.CreateDB(t)
			conn := connect(t, e, db)
			mustExec(t, conn, "CREATE TABLE a (pk serial PRIMARY KEY, aa integer)", "CREATE TABLE b (pk serial PRIMARY KEY, bb integer)")
			cfg := testConfig(e, db, "public.a", "public.b")
			cfg.Snapshot = "never"
			cfg.Encoding.Encoding = encoding
			cfg.Encoding.SchemasEnable = true
			cfg.Encoding.TransactionMetadata = true
			if encoding == "debezium" {
				cfg.Encoding.DecimalHandling, cfg.Encoding.TimePrecision, cfg.Encoding.IntervalHandling = "precise", "adaptive", "numeric"
				cfg.Encoding.BinaryHandling, cfg.Encoding.HstoreHandling = "bytes", "json"
				cfg.Encoding.UnavailablePlaceholder = debezium.DefaultPlaceholder
			}
			startCapture(t, cfg)
			waitSlotActive(t, conn, cfg.Slot)
			var xid uint32
			tx, err := conn.Begin(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, sql := range []string{"INSERT INTO a (aa) VALUES (1)", "INSERT INTO b (bb) VALUES (2)", "INSERT INTO a (aa) VALUES (3)"} {
				if _, err := tx.Exec(context.Background(), sql); err != nil {
					t.Fatal(err)
				}
			}
			if err := tx.QueryRow(context.Background(), "SELECT txid_current()::bigint").Scan(&xid); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(context.Background()); err != nil {
				t.Fatal(err)
			}
			txTopic := debezium.TransactionTopic(cfg.TopicPrefix)
			waitFor(t, 30*time.Second, "BEGIN and END", func() bool { return topicCount(t, e.Kafka.Brokers(), txTopic) >= 2 })

			var txRecs []*sarama.ConsumerMessage
			consumeTopic(t, e.Kafka.Brokers(), txTopic, func(m *sarama.ConsumerMessage) { txRecs = append(txRecs, m) })
			if len(txRecs) != 2 {
				t.Fatalf("%d transaction records, want BEGIN and END", len(txRecs))
			}
			type txValue struct {
				Status          string `json:"status"`
				ID              string `json:"id"`
				EventCount      *int64 `json:"event_count"`
				DataCollections []struct {
					Name  string `json:"data_collection"`
					Count int64  `json:"event_count"`
				} `json:"data_collections"`
				TsMs int64 `json:"ts_ms"`
			}
			payload := func(raw []byte) []byte {
				if encoding != "debezium" {
					return raw
				}
				var rec struct {
					Schema  json.RawMessage `json:"schema"`
					Payload json.RawMessage `json:"payload"`
				}
				if err := json.Unmarshal(raw, &rec); err != nil || len(rec.Schema) == 0 {
					t.Fatalf("record %s: want {schema, payload} (%v)", raw, err)
				}
				return rec.Payload
			}
			var begin, end txValue
			if err := json.Unmarshal(payload(txRecs[0].Value), &begin); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(payload(txRecs[1].Value), &end); err != nil {
				t.Fatal(err)
			}
			prefix := fmt.Sprintf("%d:", xid)
			if begin.Status != "BEGIN" || begin.EventCount != nil || begin.DataCollections != nil || len(begin.ID) <= len(prefix) || begin.ID[:len(prefix)] != prefix {
				t.Errorf("BEGIN = %s", payload(txRecs[0].Value))
			}
			if end.Status != "END" || end.ID != begin.ID || end.EventCount == nil || *end.EventCount != 3 || end.TsMs == 0 {
				t.Errorf("END = %s", payload(txRecs[1].Value))
			}
			counts := map[string]int64{}
			for _, c := range end.DataCollections {
				counts[c.Name] = c.Count
			}
			if len(counts) != 2 || counts["public.a"] != 2 || counts["public.b"] != 1 {
				t.Errorf("END data_collections %+v, want public.a 2 and public.b 1", end.DataCollections)
			}
			var wantKey string
			if encoding == "debezium" {
				wantKey = `{"schema":{"type":"struct","fields":[{"type":"string","optional":false,"field":"id"}],"optional":false,"name":"io.debezium.connector.common.TransactionMetadataKey","version":1},"payload":{"id":"` + begin.ID + `"}}`
			} else {
				wantKey = `{"id":"` + begin.ID + `"}`
			}
			if string(txRecs[0].Key) != wantKey {
				t.Errorf("transaction key %s, want %s", txRecs[0].Key, wantKey)
			}

			// The data events: (total_order, data_collection_order).
			want := map[string][][2]int64{"a": {{1, 1}, {3, 2}}, "b": {{2, 1}}}
			for table, orders := range want {
				var got [][2]int64
				consumeTopic(t, e.Kafka.Brokers(), pipeline.Topic(cfg.TopicPrefix, "public", table), func(m *sarama.ConsumerMessage) {
					var ev struct {
						Transaction *pipeline.Transaction `json:"transaction"`
					}
					if err := json.Unmarshal(payload(m.Value), &ev); err != nil || ev.Transaction == nil {
						t.Fatalf("%s event %s: no transaction block (%v)", table, m.Value, err)
					}
					if ev.Transaction.ID != begin.ID {
						t.Errorf("%s event: transaction id %q, want %q", table, ev.Transaction.ID, begin.ID)
					}
					got = append(got, [2]int64{ev.Transaction.TotalOrder, ev.Transaction.DataCollectionOrder})
				})
				// Different keys land on different partitions: compare in
				// transaction order.
				slices.SortFunc(got, func(x, y [2]int64) int { return cmp.Compare(x[0], y[0]) })
				if fmt.Sprint(got) != fmt.Sprint(orders) {
					t.Errorf("%s: (total_order, data_collection_order) %v, want %v", table, got, orders)
				}
			}
		})
	}
}

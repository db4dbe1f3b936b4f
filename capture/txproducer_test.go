package capture

import (
	"testing"
	"time"
)

// TestTxnDueCommitsLiveWritesSoon: a Kafka transaction holding a few live
// writes commits after txnLiveAge, so that read-your-writes waits are not
// held for txnMaxAge; one filling up with a backlog still runs to
// txnMaxAge or its record bound, so that commits stay rare in bulk.
func TestTxnDueCommitsLiveWritesSoon(t *testing.T) {
	began := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		records int
		age     time.Duration
		want    bool
	}{
		{"live writes, young", 20, txnLiveAge / 2, false},
		{"live writes at the live age", 20, txnLiveAge, true},
		{"backlog at the live age", txnBulkRecords, txnLiveAge, false},
		{"backlog just short of the max age", 5000, txnMaxAge - time.Millisecond, false},
		{"backlog at the max age", 5000, txnMaxAge, true},
		{"full", 20000, time.Millisecond, true},
	}
	for _, c := range cases {
		tx := &txn{maxRecs: 20000, open: true, began: began, records: c.records}
		if got := tx.due(began.Add(c.age)); got != c.want {
			t.Errorf("%s (%d records, %v old): due = %v, want %v", c.name, c.records, c.age, got, c.want)
		}
	}
	if (&txn{maxRecs: 1, records: 5, began: began}).due(began.Add(time.Hour)) {
		t.Error("no transaction open: due says commit")
	}
}

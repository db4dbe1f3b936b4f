package exactlyonce

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/pipeline"
)

// exactness is what a full read of the topics showed against the ledger.
type exactness struct {
	records    int // change records read (tombstones included)
	events     int // of those, outbox events
	duplicates int // records whose change (position header) was read before
	missing    int // committed changes not on the topics
	unexpected int // records of no committed change (rolled back, or invented)
	rolledBack int // of those, records of a rolled-back change
	stale      int // keys whose latest record differs from the SQL row
}

func (x exactness) String() string {
	return fmt.Sprintf("%d records (%d outbox events): %d duplicates, %d missing, %d not committed (%d of rolled-back changes), %d keys whose latest record is not the SQL row",
		x.records, x.events, x.duplicates, x.missing, x.unexpected, x.rolledBack, x.stale)
}

func (x exactness) exact() bool {
	return x.duplicates == 0 && x.missing == 0 && x.unexpected == 0 && x.stale == 0
}

// checkExact compares recs (a read_committed read of every table topic)
// with what the writers committed and with the tables now, reports up to
// a few examples of each problem with t.Errorf, and returns the counts.
func checkExact(t *testing.T, s *setup, recs []rec, l *ledger) exactness {
	t.Helper()
	var x exactness
	examples := map[string]int{}
	report := func(kind, format string, args ...any) {
		if examples[kind]++; examples[kind] <= 5 {
			t.Errorf(kind+": "+format, args...)
		}
	}
	topicTable := map[string]string{s.topics[len(tables)]: eventsTable}
	for i, table := range tables {
		topicTable[s.topics[i]] = table
	}
	// Duplicates by position: a change is its position plus what the
	// record is (a delete's tombstone shares the delete's position).
	seen := map[string]rec{}
	onTopic := map[change]int{} // changes read, tombstones left out
	for _, r := range recs {
		x.records++
		if r.Op == opEvent {
			x.events++
		}
		if first, dup := seen[r.identity()]; dup {
			x.duplicates++
			report("duplicate", "%s id %d at %s (%s) read at %s/%d@%d and %s/%d@%d",
				r.Topic, r.ID, r.PosText, opName(r.Op), first.Topic, first.Partition, first.Offset, r.Topic, r.Partition, r.Offset)
			continue
		}
		seen[r.identity()] = r
		if r.Op != "" {
			onTopic[change{topicTable[r.Topic], r.ID, r.Rev}]++
		}
	}
	committed := map[change]bool{}
	l.mu.Lock()
	for _, c := range l.committed {
		committed[c] = true
		if onTopic[c] == 0 {
			x.missing++
			report("missing", "committed change %s id %d rev %d is not on the topic", c.Table, c.ID, c.Rev)
		}
	}
	rolledBack := map[change]bool{}
	for _, c := range l.rolledBack {
		rolledBack[c] = true
	}
	l.mu.Unlock()
	for c, n := range onTopic {
		if !committed[c] {
			x.unexpected += n
			if rolledBack[c] {
				x.rolledBack += n
			}
			report("not committed", "%s id %d rev %d is on the topic (%d times) but was not committed (rolled back: %v)", c.Table, c.ID, c.Rev, n, rolledBack[c])
		} else if n > 1 {
			// A committed change read twice under two positions.
			x.duplicates += n - 1
			report("duplicate", "%s id %d rev %d is on the topic %d times under different positions", c.Table, c.ID, c.Rev, n)
		}
	}
	x.stale = checkLatest(t, s, recs, report)
	return x
}

func opName(op pipeline.Op) string {
	if op == "" {
		return "tombstone"
	}
	return string(op)
}

// checkLatest compares the latest record per key (by position) with the
// row in the table: its rev, or deleted. It returns the keys that differ.
func checkLatest(t *testing.T, s *setup, recs []rec, report func(kind, format string, args ...any)) int {
	t.Helper()
	stale := 0
	for i, table := range tables {
		latest := map[int64]rec{}
		for _, r := range recs {
			if r.Topic != s.topics[i] {
				continue
			}
			if cur, ok := latest[r.ID]; !ok || cur.Pos.Less(r.Pos) || (cur.Pos == r.Pos && r.Op == "") {
				latest[r.ID] = r
			}
		}
		rows := map[int64]int64{}
		q, err := s.conn.Query(context.Background(), "SELECT id, rev FROM "+pgx.Identifier{table}.Sanitize())
		if err != nil {
			t.Fatal(err)
		}
		for q.Next() {
			var id, rev int64
			if err := q.Scan(&id, &rev); err != nil {
				t.Fatal(err)
			}
			rows[id] = rev
		}
		q.Close()
		if q.Err() != nil {
			t.Fatal(q.Err())
		}
		for id, rev := range rows {
			r, ok := latest[id]
			if !ok || r.Op == pipeline.OpDelete || r.Op == "" || r.Rev != rev {
				stale++
				report("latest", "%s id %d: the row has rev %d, the latest record is %s rev %d (found %v)", table, id, rev, opName(r.Op), r.Rev, ok)
			}
		}
		for id, r := range latest {
			if _, ok := rows[id]; !ok && r.Op != "" && r.Op != pipeline.OpDelete {
				stale++
				report("latest", "%s id %d is deleted, the latest record is %s rev %d", table, id, opName(r.Op), r.Rev)
			}
		}
	}
	return stale
}

// groups counts the distinct changes per Postgres transaction (commit LSN
// of the position) in recs.
func groups(recs []rec) map[string]int {
	seen := map[string]bool{}
	out := map[string]int{}
	for _, r := range recs {
		if !seen[r.identity()] {
			seen[r.identity()] = true
			out[commitKey(r.Pos)]++
		}
	}
	return out
}

// commitKey names a Postgres transaction by the epoch and commit LSN of
// its changes' positions.
func commitKey(p pipeline.Position) string {
	return fmt.Sprintf("%d@%s", p.Epoch, p.Commit)
}

// sortedKeys is for stable messages.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

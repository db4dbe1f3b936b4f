package pipeline

import (
	"reflect"
	"strings"
	"testing"
)

// TestCheckpointRoundTrip: the checkpoint record's value reads back as
// written, with the LSN in Postgres' text form for people reading the
// topic.
func TestCheckpointRoundTrip(t *testing.T) {
	c := Checkpoint{Slot: "s", Epoch: 7, LSN: 0x1_6B3748, Backfills: map[int64]BackfillMark{
		3: {LastKey: []string{"42", "a'b"}, ChunksDone: 5, RowsDone: 5000, RowsSkipped: 2},
	}}
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if want := `"lsn":"0/16B3748"`; !strings.Contains(string(b), want) {
		t.Fatalf("value %s lacks %s", b, want)
	}
	got, err := DecodeCheckpoint(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("read back %+v, want %+v", got, c)
	}
	if _, err := DecodeCheckpoint([]byte(`{"slot":"s","lsn":"nope"}`)); err == nil {
		t.Fatal("a bad LSN was accepted")
	}
}

package pipeline

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

func TestWatermarkRoundTrip(t *testing.T) {
	w := Watermark{LSN: 0x16B3748, AsOf: time.UnixMilli(1700000000123), Partitions: 4}
	var hs []*sarama.RecordHeader
	for _, h := range w.Headers() {
		hs = append(hs, &h)
	}
	got, ok, err := ParseWatermark(hs)
	if err != nil || !ok || got.LSN != w.LSN || !got.AsOf.Equal(w.AsOf) || got.Partitions != 4 {
		t.Fatalf("ParseWatermark = %+v, %v, %v; want %+v", got, ok, err, w)
	}
	if string(hs[0].Value) != "0/16B3748" {
		t.Errorf("LSN header %q, want Postgres' form 0/16B3748", hs[0].Value)
	}
	if !IsWatermark(hs) || IsWatermark([]*sarama.RecordHeader{{Key: []byte(HeaderPosition), Value: []byte("0/1:0/1")}}) {
		t.Error("IsWatermark does not tell watermarks from changes")
	}
	// The key is a JSON object, as every key on a table topic is.
	var key map[string]int
	if err := json.Unmarshal(WatermarkKey(3), &key); err != nil || key["cdcsync.watermark"] != 3 {
		t.Errorf("WatermarkKey(3) = %s (%v)", WatermarkKey(3), err)
	}
	var wrapped struct {
		Schema  struct{ Type string }
		Payload map[string]int
	}
	if err := json.Unmarshal(WatermarkKeyWithSchema(3), &wrapped); err != nil || wrapped.Schema.Type != "struct" || wrapped.Payload["cdcsync.watermark"] != 3 {
		t.Errorf("WatermarkKeyWithSchema(3) = %s (%v)", WatermarkKeyWithSchema(3), err)
	}
}

func TestParseWatermarkRefusesMalformed(t *testing.T) {
	h := func(k, v string) *sarama.RecordHeader { return &sarama.RecordHeader{Key: []byte(k), Value: []byte(v)} }
	for name, hs := range map[string][]*sarama.RecordHeader{
		"bad lsn":         {h(HeaderWatermark, "x"), h(HeaderWatermarkTime, "1"), h(HeaderPartitions, "1")},
		"no time":         {h(HeaderWatermark, "0/1"), h(HeaderPartitions, "1")},
		"zero partitions": {h(HeaderWatermark, "0/1"), h(HeaderWatermarkTime, "1"), h(HeaderPartitions, "0")},
	} {
		if _, ok, err := ParseWatermark(hs); !ok || err == nil {
			t.Errorf("%s: ok %v, err %v; want a watermark with an error", name, ok, err)
		}
	}
	if _, ok, err := ParseWatermark([]*sarama.RecordHeader{h(HeaderPosition, "0/1:0/1")}); ok || err != nil {
		t.Errorf("a change's headers: ok %v, err %v", ok, err)
	}
}

package sink

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

// TestOrderIDColumnNotTheKeyIsRefused configures the inventory sink with an
// order id column (a unique order number) that is not the key the events
// carry. A primary-key change then produces a delete and a create of the
// same order number at one position, one of which would be skipped as not
// newer: orders would be lost. The sink must stop with a configuration
// error naming the variable instead of applying anything.
func TestOrderIDColumnNotTheKeyIsRefused(t *testing.T) {
	h := newHarness(t, harnessOptions{items: 5, onHand: 10})
	cfg := h.config(config.SinkInventory)
	cfg.AvailabilityCache = "off"
	cfg.OrderIDColumn = "order_no"
	s := h.start(cfg)

	w := &workload{}
	after := func(id int64) pipeline.Row {
		return pipeline.Row{
			{Name: "id", Value: json.RawMessage(strconv.FormatInt(id, 10))},
			{Name: "order_no", Value: json.RawMessage(`"A-1"`)},
			{Name: "item_id", Value: json.RawMessage(`3`)},
			{Name: "quantity", Value: json.RawMessage(`2`)},
			{Name: "status", Value: json.RawMessage(`"created"`)},
		}
	}
	create := w.event(pipeline.OpCreate, at(100, 90), nil, after(1), nil)
	// The key moves from id 1 to id 2; the order number stays.
	rekey := w.event(pipeline.OpUpdate, at(200, 190), pipeline.Row{{Name: "id", Value: json.RawMessage(`1`)}}, after(2), nil)
	h.produce([]record{
		{key: keyJSON(1), value: create.AppendJSON(nil), pos: at(100, 90), op: pipeline.OpCreate},
		{key: keyJSON(2), value: rekey.AppendJSON(nil), pos: at(200, 190), op: pipeline.OpUpdate},
	})

	var err error
	select {
	case err = <-s.done:
		s.cancel()
		s.cancel = nil
	case <-time.After(30 * time.Second):
		t.Fatalf("the sink kept running with %s=order_no while events are keyed by id; applied: %v", config.Prefix+"_ORDER_ID_COLUMN", h.items()[3])
	}
	var cfgErr *config.Error
	if !errors.As(err, &cfgErr) || cfgErr.Var != config.Prefix+"_ORDER_ID_COLUMN" {
		t.Fatalf("sink.Run = %v, want a *config.Error for %s_ORDER_ID_COLUMN", err, config.Prefix)
	}
	if !strings.Contains(err.Error(), `"order_no"`) || !strings.Contains(err.Error(), "[id]") {
		t.Errorf("error %q should name the configured column and the key columns", err)
	}
	if got := h.items()[3]; got[1] != 0 || got[2] != 0 {
		t.Errorf("item 3: reserved %d shipped %d after the refusal, want nothing applied", got[1], got[2])
	}
}

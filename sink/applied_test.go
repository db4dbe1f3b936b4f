package sink

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdcsync/cdcsync/pipeline"
)

func pos(epoch uint32, lsn pglogrepl.LSN) pipeline.EpochLSN {
	return pipeline.EpochLSN{Epoch: epoch, LSN: lsn}
}

// Positions only move forward; a wait ends once every sink of the process
// reached the LSN, and with ctx otherwise; the metrics show each sink's
// position and freshness.
func TestAppliedPositions(t *testing.T) {
	p := NewAppliedPositions()
	p.register("inventory")
	p.register("redis")
	asOf := time.Now().Add(-3 * time.Second)
	p.update("inventory", Applied{EpochLSN: pos(0, 0x200), AsOf: asOf})
	p.update("inventory", Applied{EpochLSN: pos(0, 0x100), AsOf: time.Now()}) // older: ignored
	if got := p.Snapshot()[0]; got.Sink != "inventory" || got.LSN != 0x200 {
		t.Fatalf("after an older update: %+v", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.Wait(ctx, pos(0, 0x150)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with the redis sink behind = %v, want the deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Wait(context.Background(), pos(0, 0x150)) }()
	p.update("redis", Applied{EpochLSN: pos(0, 0x180), AsOf: asOf})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not end when both sinks reached the LSN")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(p)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()+"/"+m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	if got["cdcsync_sink_applied_lsn/inventory"] != 0x200 || got["cdcsync_sink_applied_lsn/redis"] != 0x180 {
		t.Errorf("cdcsync_sink_applied_lsn: %v", got)
	}
	if f := got["cdcsync_sink_freshness_seconds/redis"]; f < 3 || f > 60 {
		t.Errorf("cdcsync_sink_freshness_seconds of a position 3s old: %v", f)
	}
	body := p.report(asOf.Add(3 * time.Second))
	if body.LSN != "0/180" || len(body.Sinks) != 2 || body.Sinks[0].LagSeconds == nil || *body.Sinks[0].LagSeconds != 3 {
		t.Errorf("report = %+v", body)
	}
}

// After a failover the new source epoch's LSNs may be below the old
// one's: a position of the newer epoch is newer whatever its LSN, and a
// wait for a token of the newer epoch does not end on an older epoch's
// higher LSN.
func TestAppliedPositionsNewerEpoch(t *testing.T) {
	p := NewAppliedPositions()
	p.register("inventory")
	p.update("inventory", Applied{EpochLSN: pos(0, 0x9000)})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.Wait(ctx, pos(1795600000, 0x100)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait for epoch 1795600000 at 0/100 with the sink at 0/9000 of epoch 0 = %v, want the deadline", err)
	}
	p.update("inventory", Applied{EpochLSN: pos(1795600000, 0x200)})
	if got := p.Snapshot()[0]; got.EpochLSN != pos(1795600000, 0x200) {
		t.Fatalf("a newer epoch's lower LSN did not move the position: %+v", got)
	}
	if err := p.Wait(context.Background(), pos(1795600000, 0x100)); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(context.Background(), pos(0, 0xFFFFFF)); err != nil {
		t.Fatalf("an older epoch's token: %v", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(p)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	epoch := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "cdcsync_sink_applied_epoch" {
			epoch = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if epoch != 1795600000 {
		t.Errorf("cdcsync_sink_applied_epoch = %v, want 1795600000", epoch)
	}
	if body := p.report(time.Now()); body.LSN != "1795600000@0/200" {
		t.Errorf("report lsn = %q", body.LSN)
	}
}

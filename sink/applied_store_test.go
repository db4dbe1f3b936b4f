package sink

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcsync/cdcsync/config"
	"github.com/cdcsync/cdcsync/pipeline"
)

// roundTrips counts the queries and batches a connection sends: each is
// one round trip to the server.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// A batch with a watermark records it, advances the applied-through
// position once every partition has one, and reads the position back, all
// in one round trip: capture writes watermarks every few milliseconds, so
// nearly every batch of a live sink carries one.
func TestRecordAppliedInOneRoundTrip(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	pcfg, err := pgxpool.ParseConfig(h.pg.URL(h.db))
	if err != nil {
		t.Fatal(err)
	}
	trips := &roundTrips{}
	pcfg.ConnConfig.Tracer = trips
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	inv := &inventory{pool: pool, orders: orderSchema{schema: "public", table: "orders"}, topic: h.topic}
	if err := inv.ensureSchema(ctx); err != nil {
		t.Fatal(err)
	}
	asOf := time.UnixMilli(time.Now().UnixMilli())
	record := func(partition int32, lsn uint64) Applied {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		mark := &partitionMark{Topic: h.topic, Partition: partition,
			Watermark: pipeline.Watermark{Epoch: 2, LSN: pglsn(lsn), AsOf: asOf, Partitions: 4}}
		before := trips.n.Load()
		got, err := recordApplied(ctx, tx, config.SinkInventory, []string{h.topic}, mark)
		if err != nil {
			t.Fatal(err)
		}
		if n := trips.n.Load() - before; n != 1 {
			t.Errorf("recording a watermark took %d round trips, want 1", n)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		return got
	}
	for p, lsn := range []uint64{0x300, 0x100, 0x200} {
		if got := record(int32(p), lsn); got.known() {
			t.Fatalf("applied position %v with %d of 4 partitions' watermarks, want none", got, p+1)
		}
	}
	got := record(3, 0x400)
	if want := pos(2, 0x100); got.EpochLSN != want || !got.AsOf.Equal(asOf) {
		t.Fatalf("applied position %+v, want %v as of %v", got, want, asOf)
	}
	stored, err := readApplied(ctx, pool, config.SinkInventory)
	if err != nil || stored != got {
		t.Fatalf("stored applied position %+v (%v), want %+v", stored, err, got)
	}
}

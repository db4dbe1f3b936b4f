package status

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// While CREATE_REPLICATION_SLOT waits for a running transaction the slot
// exists and is active, yet a transaction committing then is decoded by
// nobody: Streaming must say no until the slot has its consistent point
// (the demo's generator waited on exists+active and lost the outbox
// events of its first orders).
func TestSlotIsNotStreamingWhileCreated(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A transaction with an xid holds the slot's creation back.
	blocker, err := pgx.Connect(ctx, f.cfg.SourceURL)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close(context.Background())
	tx, err := blocker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT txid_current()`); err != nil {
		t.Fatal(err)
	}
	creator, err := pgx.Connect(ctx, f.cfg.SourceURL)
	if err != nil {
		t.Fatal(err)
	}
	defer creator.Close(context.Background())
	created := make(chan error, 1)
	go func() {
		_, err := creator.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, f.cfg.Slot)
		created <- err
	}()
	c, err := New(ctx, f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Wait until the slot shows up, still being created.
	deadline := time.Now().Add(20 * time.Second)
	var r *Report
	for {
		if r, err = c.Collect(ctx); err != nil {
			t.Fatal(err)
		}
		if r.Slot.Exists && r.Slot.Active {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot never appeared as being created: %+v", r.Slot)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r.Slot.Streaming() {
		t.Errorf("slot %+v is being created (a transaction holds it back), but Streaming says yes", r.Slot)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	// Created and released by the SQL function: it has its consistent
	// point now, and nobody streams from it.
	if r, err = c.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	if r.Slot.ConfirmedLSN == "" || r.Slot.Streaming() {
		t.Errorf("slot after creation %+v: want a confirmed LSN and not streaming (inactive)", r.Slot)
	}
	if _, err := creator.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, f.cfg.Slot); err != nil {
		t.Fatal(err)
	}
}

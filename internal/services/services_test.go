package services

import (
	"context"
	"testing"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

func TestServicesStartAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	ctx := context.Background()
	pg, err := StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	db := "services_test"
	if err := pg.Exec(ctx, "postgres", "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, db, "CREATE TABLE t(id int primary key)", "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	// Crash it with backends alive, several times: each restart must find
	// the old server's processes and shared memory gone.
	for i := 0; i < 3; i++ {
		held, err := pgx.Connect(ctx, pg.URL(db))
		if err != nil {
			t.Fatal(err)
		}
		if err := pg.Restart(true); err != nil {
			t.Fatalf("crash restart %d: %v", i, err)
		}
		held.Close(ctx)
	}
	if err := pg.Exec(ctx, db, "INSERT INTO t VALUES (2)", "SHOW wal_level"); err != nil {
		t.Fatal(err)
	}

	rd, err := StartRedis()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	rc := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rc.Close()
	if err := rc.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rd.Restart(true); err != nil {
		t.Fatal(err)
	}
	if v, err := rc.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("after kill -9 redis lost k: %q %v", v, err)
	}

	k, err := StartKafka()
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if err := k.CreateTopic("t1", 2); err != nil {
		t.Fatal(err)
	}
	cfg := adminConfig()
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1
	prod, err := sarama.NewSyncProducer(k.Brokers(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: "t1", Key: sarama.StringEncoder("a"), Value: sarama.StringEncoder("x")}); err != nil {
		t.Fatal(err)
	}
	prod.Close()
	k.Stop()
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	client, err := sarama.NewClient(k.Brokers(), adminConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var total int64
	for p := int32(0); p < 2; p++ {
		off, err := client.GetOffset("t1", p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		total += off
	}
	if total != 1 {
		t.Fatalf("after broker restart %d records, want 1", total)
	}
}

// Package testenv is the integration tests' harness: it starts the real
// services the tests run against (internal/services: a throwaway Postgres
// cluster with wal_level=logical, redis-server and a kfake broker), shares
// them per test package (Main, Env), gives each test its own database, and
// builds and runs the binary as separate processes. Nothing here is a mock:
// tests can kill and restart every service.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"

	"github.com/cdcsync/cdcsync/internal/services"
)

// Postgres is a throwaway cluster (services.Postgres) plus what tests
// need of it: a database per test.
type Postgres struct{ *services.Postgres }

// Redis is a redis-server on a free port (services.Redis).
type Redis = services.Redis

// Kafka is an in-process kfake broker (services.Kafka).
type Kafka = services.Kafka

// PostgresOption adjusts a cluster's server settings.
type PostgresOption = services.PostgresOption

// TLSFiles are a throwaway CA and server certificate.
type TLSFiles = services.TLSFiles

// StartPostgres initialises and starts a cluster with wal_level=logical.
func StartPostgres(opts ...PostgresOption) (*Postgres, error) {
	p, err := services.StartPostgres(opts...)
	if err != nil {
		return nil, err
	}
	return &Postgres{p}, nil
}

// StartRedis starts redis-server on a free port.
func StartRedis() (*Redis, error) { return services.StartRedis() }

// StartKafka starts a single-broker kfake cluster on a free port.
func StartKafka() (*Kafka, error) { return services.StartKafka() }

// WithSetting adds `-c name=value` to the server command line.
func WithSetting(name, value string) PostgresOption { return services.WithSetting(name, value) }

// WithTLS turns on TLS with a generated CA (see services.WithTLS).
func WithTLS() PostgresOption { return services.WithTLS() }

// GenerateTLS writes a new CA and server certificate into dir.
func GenerateTLS(dir string) (TLSFiles, error) { return services.GenerateTLS(dir) }

// PostgresBinDir finds the Postgres server binaries.
func PostgresBinDir() (string, error) { return services.PostgresBinDir() }

// FreePort asks the kernel for a free TCP port on 127.0.0.1.
func FreePort() (int, error) { return services.FreePort() }

// CreateDB creates a database with a random name for one test and drops it
// (with its replication slots) when the test ends. It returns the name.
func (p *Postgres) CreateDB(tb testing.TB) string {
	tb.Helper()
	name := RandomName("db")
	ctx := context.Background()
	if err := p.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, p.URL("postgres"))
		if err != nil {
			return // the server may have been stopped by the test
		}
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, name)
		_, _ = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, name)
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	return name
}

// RandomName returns prefix_<random hex>, usable as a database, slot, topic
// or table name.
func RandomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

// SaramaConfig is a client configuration suitable for reading test topics:
// consumers read read_committed, as cdcsync's own readers do
// (kafkaclient.Config), so records of open or aborted Kafka transactions
// are never handed out.
func SaramaConfig() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.ClientID = "cdcsync-test"
	cfg.Consumer.IsolationLevel = sarama.ReadCommitted
	return cfg
}

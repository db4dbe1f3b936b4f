package testenv

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// Env is the set of services a test package shares: one Postgres cluster
// (tests create their own databases in it), one redis-server and one broker.
// Tests that kill or restart a service should start their own instead.
type Env struct {
	PG    *Postgres
	Redis *Redis
	Kafka *Kafka
}

// Close stops every service.
func (e *Env) Close() {
	if e.PG != nil {
		e.PG.Close()
	}
	if e.Redis != nil {
		e.Redis.Close()
	}
	if e.Kafka != nil {
		e.Kafka.Close()
	}
}

// Main is for TestMain: it starts the services into *env (unless -short),
// runs the tests and tears everything down, returning the exit code.
//
//	var env *testenv.Env
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env)) }
//
// In -short mode *env stays nil; tests call RequireEnv to skip.
func Main(m *testing.M, env **Env) int {
	flag.Parse()
	defer RemoveBuilds()
	if testing.Short() {
		return m.Run()
	}
	e, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	*env = e
	defer e.Close()
	return m.Run()
}

// Start starts Postgres, Redis and the broker.
func Start() (*Env, error) {
	e := &Env{}
	var err error
	if e.PG, err = StartPostgres(); err != nil {
		return nil, err
	}
	if e.Redis, err = StartRedis(); err != nil {
		e.Close()
		return nil, err
	}
	if e.Kafka, err = StartKafka(); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// RequireEnv skips the test when the services were not started (-short).
func RequireEnv(tb testing.TB, env *Env) *Env {
	tb.Helper()
	if env == nil {
		tb.Skip("integration test: needs services (skipped with -short)")
	}
	return env
}

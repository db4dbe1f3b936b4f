// Package soak is the chaos soak: TestSoak starts the whole pipeline as
// separate processes (the order database and the inventory store as two
// Postgres clusters, Redis, the development broker with an on-disk data
// dir, capture and two sink processes), runs concurrent order writers, and
// kills, restarts and pauses every component on a schedule drawn from a
// seed. At the end it drains the pipeline, runs `cdcsync verify`, checks
// that every committed change is on Kafka, and prints one summary.
//
//	go test ./test/soak -run TestSoak -v                        # ~90 s
//	CDCSYNC_SOAK_DURATION=30m CDCSYNC_SOAK_SEED=42 make soak   # long run
package soak

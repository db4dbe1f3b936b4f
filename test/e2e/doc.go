// Package e2e holds end-to-end tests of the whole pipeline in one process:
// real Postgres (order database and inventory store), Redis and a
// Kafka-protocol broker (kfake) from internal/testenv, with capture.Run and
// sink.Run running while concurrent writers change orders. The tests then
// wait until the pipeline caught up and require internal/verify to find
// no drift.
//
//	go test -race ./test/e2e
package e2e

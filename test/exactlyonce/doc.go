// Package exactlyonce proves capture's exactly-once topics end to end
// (issue 12; DESIGN.md "Exactly-once topics"): the real cdcsync binary
// runs as separate processes against a real Postgres cluster and the
// in-process development broker, and is SIGKILLed, SIGSTOPped and its
// broker restarted while writers commit and roll back multi-statement
// transactions. A read_committed reader written for these tests (raw
// Fetch requests, so it knows exactly which offsets it has passed, control
// markers included) then checks that every committed change is on the
// table topics exactly once, that rolled-back changes never are, and that
// at no moment a reader could see part of a Postgres transaction.
//
//	go test ./test/exactlyonce -v                          # short, tens of seconds a test
//	make exactly-once-soak                                 # the long crash run
//	CDCSYNC_TEST_DELIVERY=at-least-once go test ./test/exactlyonce   # the baseline: fails
package exactlyonce

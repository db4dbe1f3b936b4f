# cdcsync: build, test and run targets. `make test` is the whole suite and
# needs no set-up beyond Go and the Postgres/Redis server binaries, which
# scripts/ensure-deps.sh installs when missing (as root, with apt-get).

GO      ?= go
PKGS    ?= ./...
BIN     ?= bin/cdcsync

.PHONY: all build test test-big soak snapshot-soak exactly-once-soak ryw live-verify demo bench lint deps clean readme

all: build

build:
	$(GO) build -o $(BIN) ./cmd/cdcsync

deps:
	@./scripts/ensure-deps.sh

test: deps
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 25m $(PKGS)

# The chaos soak, long: 30 minutes of writes unless SOAK_DURATION (or
# CDCSYNC_SOAK_DURATION) says otherwise; CDCSYNC_SOAK_SEED replays a fault
# sequence. `make test` runs a short one.
soak: deps
	CDCSYNC_SOAK_DURATION=$${SOAK_DURATION:-$${CDCSYNC_SOAK_DURATION:-30m}} $(GO) test ./test/soak -run TestSoak -count=1 -v -timeout 0

# The initial-snapshot tests at full size: two captures starting together
# over 200,000 rows, and 500,000 rows with capture SIGKILLed twice (both
# under four writers). `make test` runs them with fewer rows.
snapshot-soak: deps
	CDCSYNC_SNAPSHOT_SOAK=1 $(GO) test ./capture -run 'TestTwoCapturesStartTogetherOnNewSlot|TestInitialSnapshotResumesAfterSIGKILL' -count=1 -v -timeout 30m

# The exactly-once tests at full size (issue 12): five minutes of writers
# with twelve capture SIGKILLs and three broker restarts, and 200,000-row
# snapshots and backfills killed twice. `make test` runs them short.
exactly-once-soak: deps
	CDCSYNC_EXACTLY_ONCE_SOAK=1 $(GO) test ./test/exactlyonce -count=1 -v -timeout 30m

# Live verify under load, full length (make test runs it for 10s).
live-verify: deps
	CDCSYNC_LIVE_VERIFY_DURATION=$${LIVE_VERIFY_DURATION:-30s} $(GO) test ./internal/verify -run TestLiveVerifyUnderLoad -count=1 -v -timeout 10m

# The full-size variants of tests that run short in `make test`.
test-big: deps
	CDCSYNC_TEST_TRUNCATE_ITEMS=500000 $(GO) test ./sink -run TestTruncateOnManyItems -count=1 -v -timeout 20m

# The read-your-writes test in full (issue 15): 30 s of writes at ~500
# txn/s and at least 5,000 read-after-write checks; `make test` runs a
# 10-second one.
ryw: deps
	CDCSYNC_RYW_DURATION=$${CDCSYNC_RYW_DURATION:-30s} CDCSYNC_RYW_CHECKS=$${CDCSYNC_RYW_CHECKS:-5000} $(GO) test ./test/e2e -run TestReadYourWritesUnderLoad -count=1 -v -timeout 20m

demo: deps
	$(GO) run ./cmd/cdcsync demo

bench: deps
	$(GO) test -run '^$$' -bench . $(PKGS)

lint:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt -l reports:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)

clean:
	rm -rf bin

readme:
	$(GO) test ./cmd/cdcsync -run TestREADMEConfigurationIsCurrent -count=1 -update

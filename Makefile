# The two commands a new user needs: `make run` and `make test`.
GO ?= go
PKGS := ./...

.PHONY: run test bench bench-quick fuzz chaos soak services lint build migrate

## run: start the whole system (creates the database, applies migrations, serves API, relay, projectors)
run: services
	$(GO) run ./cmd/chatbotd serve

## test: every test, unit and integration, against the local services (started, or
## installed with Chromium for the docs page's test, first)
test: services
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 12m $(PKGS)

## bench: the benchmark suite; writes its tables into BENCHMARKS.md
bench: services
	$(GO) build -tags benchnoauth -o bin/chatbotd-bench ./cmd/chatbotd
	$(GO) run ./cmd/bench -binary bin/chatbotd-bench -out BENCHMARKS.md

## bench-quick: a one-minute subset at smaller sizes, printed (BENCHMARKS.md is left alone)
bench-quick: services
	$(GO) build -tags benchnoauth -o bin/chatbotd-bench ./cmd/chatbotd
	$(GO) run ./cmd/bench -quick -duration 2s -binary bin/chatbotd-bench

## fuzz: each fuzz test for FUZZTIME (default 15s); their seed corpora are in testdata/fuzz
FUZZTIME ?= 15s
FUZZ_TARGETS := ./command:FuzzCommandInputs ./command:FuzzParseCSV ./events:FuzzDecodeEnvelope \
	./events:FuzzParseToken ./internal/auth:FuzzBearerTokens
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

## chaos: the fault suite; it stops and starts the local services (and restores them)
CHAOS ?=
chaos: services
	$(GO) build -tags chaos -o bin/chatbotd-chaos ./cmd/chatbotd
	$(GO) run ./cmd/chaos -binary bin/chatbotd-chaos $(if $(CHAOS),-run $(CHAOS))

## soak: SOAK (default 30m) of paced mixed load; writes its curves into BENCHMARKS.md
SOAK ?= 30m
soak: services
	$(GO) build -tags chaos -o bin/chatbotd-chaos ./cmd/chatbotd
	$(GO) run ./cmd/chaos -binary bin/chatbotd-chaos -soak $(SOAK) -out BENCHMARKS.md

## services: start (or install) PostgreSQL, Redis and RabbitMQ locally
services:
	@bash .ci/services

## lint: formatting and vet
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(PKGS)

build:
	$(GO) build -o bin/chatbotd ./cmd/chatbotd

migrate:
	$(GO) run ./cmd/chatbotd migrate

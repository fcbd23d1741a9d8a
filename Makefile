# sluice: the two set-up commands are `make run` and `make test` (see README.md).
BUILD     ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS      ?= $(shell nproc)
SLUICE    := $(BUILD)/src/cli/sluice

.PHONY: all deps configure build run test unit check-sanitize check-thread-safety fuzz-smoke format tidy bench clean

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null

# Everything: the library, the CLI, tests and benchmarks.
build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# Runs the main job on the embedded defaults: the demo (in-process simulated
# API with latency and a rate limit, the sample corpus under examples/, SQLite).
# Builds only the CLI.
run: configure
	@cmake --build $(BUILD) -j $(JOBS) --target sluice
	$(SLUICE) demo

# The whole suite, built with ASan+UBSan, against real services (PostgreSQL,
# pgvector via PGlite, Redis) started on loopback in a temp dir; then the TSan
# build of the concurrency tests (against the services too: task_feed_test's
# Redis cases skipped without them) and the fuzz smoke run. One instrumented
# build of everything instead of two, the tests at -O0 with one precompiled
# header, lld, and the TSan and fuzz builds compiled at nice 19 while the ASan
# suite runs keep `make test` within 15 minutes on 2 cores
# (scripts/test-all.sh).
test: deps
	@bash scripts/test-all.sh

# Unit tests only (no services).
unit: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) -L unit

# ASan+UBSan over the unit tests, TSan over the queue, pipeline and embed-stage tests.
check-sanitize: deps
	@bash scripts/test-services.sh -- bash scripts/check-sanitize.sh

# Clang's -Wthread-safety over every file (the lock annotations).
check-thread-safety: deps
	@bash scripts/check-thread-safety.sh

fuzz-smoke: deps
	@bash scripts/fuzz-smoke.sh

format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i

tidy: build
	@git ls-files 'src/*.cc' | xargs clang-tidy -p $(BUILD) --quiet

bench: build
	@echo "See BENCHMARKS.md for the benchmark commands."

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz build-background.log build-fuzz.*.log

# Every target bootstraps uv when it is missing, then runs inside the locked environment.
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif
RUN := $(UV) run --frozen

.PHONY: dev test chaos simulate ops-deps lint audit format bench-ingest bench-aggregate bench-usage bench-report bench-dedupe bench-alerts uv sync

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

# --compile-bytecode: dependencies start from .pyc, as in the image (Dockerfile), even where
# PYTHONDONTWRITEBYTECODE is set; otherwise every `meter` process compiles redis, asyncpg… anew.
sync: uv
	@$(UV) sync --frozen --all-extras --quiet --compile-bytecode

## make dev: the service on this machine (embedded Postgres/Redis unless METER_*_URL are set);
## PORT=8081 moves the API (metrics ports: METER_*METRICS_PORT, docs/configuration.md)
dev: sync
	$(RUN) meter dev $(if $(PORT),--port $(PORT))

## make ops-deps: promtool + prometheus and docker-compose (Debian packages) for tests/integration/ops
ops-deps:
	@command -v promtool >/dev/null 2>&1 && command -v docker-compose >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends prometheus docker-compose; }

## make test: the whole test suite against real Postgres and Redis, TEST_WORKERS processes at
## once (most tests wait on servers and subprocesses; more than one per core made timing-bound
## tests flaky and gained little)
TEST_WORKERS ?= 2
test: sync ops-deps
	$(RUN) pytest -n $(TEST_WORKERS) --dist loadscope

## make chaos: the chaos suite, long profile (CHAOS_ARGS="--seed N" replays; the short one runs in `make test`)
chaos: sync
	$(RUN) python -m tests.chaos.run --long $(CHAOS_ARGS)

## make simulate: the billing simulation, long profile (SIM_ARGS="--seed N --scenarios N" replays
## or resizes; the short one runs in `make test`); see docs/simulation.md
simulate: sync
	$(RUN) python -m tests.simulation.run $(SIM_ARGS)

lint: sync
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

## make audit: known vulnerabilities in the locked dependencies (pip-audit; see scripts/audit.py)
audit: sync
	UV='$(UV)' $(RUN) python scripts/audit.py

format: sync
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

## make bench-ingest: ingest throughput and latency next to a bare aiohttp baseline (needs wrk)
bench-ingest: sync
	$(RUN) python benchmarks/ingest.py

## make bench-aggregate: `meter aggregate --once` over 1M pre-loaded events next to an INSERT and a COPY loop
bench-aggregate: sync
	$(RUN) python benchmarks/aggregate.py $(BENCH_ARGS)

## make bench-usage: GET /v1/customers/{id}/usage over 10k customers x 3 meters x a month of buckets
bench-usage: sync
	$(RUN) python benchmarks/usage.py

## make bench-report: reporter events/s vs its configured rate limit, against the Stripe emulator
bench-report: sync
	$(RUN) python benchmarks/report.py

## make bench-alerts: p50/p99 from an event accepted to its alert's webhook event and its delivery, vs the fold's
bench-alerts: sync
	$(RUN) python benchmarks/alerts.py $(BENCH_ARGS)

## make bench-dedupe: Redis bytes per live dedupe key and steady-state memory, late window vs METER_DEDUPE_WINDOW
## (memory only; runs its own redis-server, BENCH_ARGS="--redis-server /usr/bin/redis-server" picks one)
bench-dedupe: sync
	$(RUN) python benchmarks/dedupe_memory.py $(BENCH_ARGS)

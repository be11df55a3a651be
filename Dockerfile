# syntax=docker/dockerfile:1
# One image for every meter process: `docker run IMAGE COMMAND`, COMMAND one of serve, aggregate,
# report, notify, evaluate, sync, migrate, keys, meters, alerts, webhooks, reconcile,
# reattribute, usage, stripe-emulator (`--help`).
# Dependencies come from uv.lock only (`uv sync --frozen`); the runtime stage has no uv, no
# compiler and no source tree, just the virtualenv, and runs as an unprivileged user.

FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
# Then the project itself, installed as a wheel (migrations and the example catalogue are packaged into it).
COPY README.md ./
COPY meter ./meter
COPY aggregator ./aggregator
COPY reporter ./reporter
COPY notifier ./notifier
COPY evaluator ./evaluator
COPY migrations ./migrations
COPY deploy/catalogue.example.yaml ./deploy/catalogue.example.yaml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim
# /var/lib/meter: the one writable directory (the emulator's state file in compose.yaml); a
# named volume mounted there starts with its owner.
RUN groupadd --system --gid 10001 meter \
    && useradd --system --uid 10001 --gid meter --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin meter \
    && install -d -o meter -g meter /var/lib/meter
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    METER_HOST=0.0.0.0
WORKDIR /app
USER meter:meter
# Ports by process (only the API is for the outside):
#   serve            8080 API; 9102 metrics (METER_METRICS_PORT)
#   aggregate        9100 metrics when METER_AGGREGATOR_METRICS_PORT=9100 (off unless set)
#   report           9101 metrics when METER_REPORTER_METRICS_PORT=9101 (off unless set)
#   notify           9103 metrics when METER_NOTIFIER_METRICS_PORT=9103 (off unless set)
#   evaluate         9104 metrics when METER_EVALUATOR_METRICS_PORT=9104 (off unless set)
#   stripe-emulator  12111 api.stripe.com and 12112 meter-events.stripe.com stand-ins (tests, dev)
#   migrate, sync, keys, … one-shot commands: none
# Metrics bind METER_METRICS_HOST (loopback unless set: unreachable from outside the container);
# they include revenue, so publish only 8080.
EXPOSE 8080 9100 9101 9102 9103 9104 12111 12112
ENTRYPOINT ["meter"]
CMD ["serve"]

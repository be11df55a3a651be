# syntax=docker/dockerfile:1
# One image for every meter process: `docker run IMAGE serve|aggregate|migrate|stripe-emulator …`.
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
# Then the project itself, installed as a wheel (migrations are packaged into it).
COPY README.md ./
COPY meter ./meter
COPY aggregator ./aggregator
COPY reporter ./reporter
COPY migrations ./migrations
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim
RUN groupadd --system --gid 10001 meter \
    && useradd --system --uid 10001 --gid meter --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin meter
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    METER_HOST=0.0.0.0
WORKDIR /app
USER meter:meter
# 8080: `meter serve`'s API. Metrics are served on ports of their own, bound to
# METER_METRICS_HOST (loopback unless set, so not reachable from outside the container):
# 9102 `meter serve` (METER_METRICS_PORT), 9100 `meter aggregate` and 9101 `meter report` when
# METER_AGGREGATOR_METRICS_PORT / METER_REPORTER_METRICS_PORT say so. Publish only 8080.
EXPOSE 8080 9100 9101 9102
ENTRYPOINT ["meter"]
CMD ["serve"]

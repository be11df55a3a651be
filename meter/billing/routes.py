"""`setup(app)`: the billing module's routes and resources, added to meter's app in one call."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

from meter import appkeys
from meter.auth import authenticate
from meter.billing import api
from meter.billing.jobs import refresh_gauges, run_dunning
from meter.billing.metrics import BillingMetrics
from meter.billing.notify import make_notifier
from meter.billing.service import Billing
from meter.billing.stripe_gateway import StripeGateway
from meter.billing.webhook import stripe_webhook
from meter.connections import PG_ERRORS
from meter.core.ports import UsageUpkeep
from meter.errors import RateLimited

log = logging.getLogger(__name__)

CUSTOMER = "/v1/customers/{id}"


def setup(app: web.Application, upkeep: UsageUpkeep) -> None:
    """Register the webhook and self-service routes and the billing resources (after the app's
    own, whose Postgres pool they share). `upkeep` is the aggregator's side of billing
    changes, chosen by the app's wiring."""
    app.cleanup_ctx.append(functools.partial(_billing_ctx, upkeep=upkeep))
    r = app.router
    r.add_post("/stripe/webhook", stripe_webhook)
    r.add_get(CUSTOMER + "/subscription", api.get_subscription)
    # The routes that call Stripe, each behind the tenant's limit.
    r.add_post(CUSTOMER + "/checkout-session", stripe_limited(api.checkout_session))
    r.add_post(CUSTOMER + "/portal-session", stripe_limited(api.portal_session))
    r.add_post(CUSTOMER + "/subscription/change-plan", stripe_limited(api.change_plan))
    r.add_post(CUSTOMER + "/subscription/cancel", stripe_limited(api.cancel))
    r.add_post(CUSTOMER + "/subscription/resume", stripe_limited(api.resume))
    r.add_post(CUSTOMER + "/payment-method/setup-intent", stripe_limited(api.setup_intent))
    r.add_get(CUSTOMER + "/entitlements", api.entitlements)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def stripe_limited(handler: Handler) -> Handler:
    """`handler` behind the per-tenant limit of billing requests that call Stripe
    (METER_BILLING_RATE_LIMIT): every tenant shares one Stripe account and its rate limit
    (https://docs.stripe.com/rate-limits), so one tenant must not use it up. Over it: 429 +
    Retry-After, before the body is read and before any Stripe call."""

    @functools.wraps(handler)
    async def limited(request: web.Request) -> web.StreamResponse:
        limiter = request.app[appkeys.BILLING_RATE_LIMITER]
        if limiter is not None:
            tenant = await authenticate(request)
            wait = limiter.acquire(tenant, time.monotonic())
            if wait:
                raise RateLimited(
                    f"tenant {tenant!r} is over its rate of billing requests that call Stripe; "
                    "retry later",
                    retry_after=max(1, math.ceil(wait)),
                )
        return await handler(request)

    return limited


async def run_jobs(billing: Billing, now: int | None = None) -> None:
    """One run of the scheduled billing work; `now` (unix s) is for tests on test clocks."""
    s = billing.settings
    at = int(time.time()) if now is None else now
    async with billing.connection() as conn:
        await run_dunning(
            conn,
            billing.notifier,
            billing.metrics,
            schedule=s.billing_dunning_schedule,
            grace_s=s.billing_grace_period_s,
            now=at,
        )
        await refresh_gauges(conn, billing.metrics, at)


async def _job(billing: Billing) -> None:
    try:
        await run_jobs(billing)
    except PG_ERRORS:
        log.exception("billing jobs failed; next run retries")


async def _billing_ctx(app: web.Application, upkeep: UsageUpkeep) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    billing = Billing(
        settings=settings,
        pool=app[appkeys.PG],
        gateway_or_none=StripeGateway.from_settings(settings),
        metrics=BillingMetrics(app[appkeys.METRICS].registry),
        notifier=make_notifier(settings.billing_notify_url, settings.billing_notify_secret),
        upkeep=upkeep,
    )
    app[appkeys.BILLING] = billing
    scheduler: AsyncIOScheduler | None = None
    if settings.billing_job_interval_s > 0:
        scheduler = AsyncIOScheduler(timezone=dt.UTC)
        scheduler.add_job(_job, "interval", seconds=settings.billing_job_interval_s, args=[billing])
        scheduler.start()
    try:
        yield
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        await billing.notifier.close()
        if billing.gateway_or_none is not None:
            await billing.gateway_or_none.close()

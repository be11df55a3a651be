"""Typed keys of everything the aiohttp app holds; handlers get dependencies only from here."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from meter.auth import KEY_CACHE as KEY_CACHE
from meter.billing.service import Billing
from meter.coalescing import Batcher
from meter.config import Settings
from meter.connections import RedisClient
from meter.ingest.committer import Committer
from meter.ingest.strict import KnownNames
from meter.ingest.validation import Limits
from meter.limits import Blocks
from meter.metrics import Metrics
from meter.ratelimit import RateLimiter
from meter.redis_keys import Keys
from meter.usage.pending import PendingReads
from meter.usage.plans import PlanCache
from meter.usage.store import ItemUsage, Snapshot

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
KEYS = web.AppKey("keys", Keys)
LIMITS = web.AppKey("limits", Limits)
PG = web.AppKey("pg", asyncpg.Pool)
REDIS = web.AppKey[RedisClient]("redis")
# KEY_CACHE (API key → tenant) is imported above from meter/auth.py, which uses it.
# Per API key ingest rate limit; None when METER_INGEST_RATE_LIMIT=0.
RATE_LIMITER = web.AppKey[RateLimiter | None]("rate_limiter")
# Per tenant limit of billing requests that call Stripe; None when METER_BILLING_RATE_LIMIT=0.
BILLING_RATE_LIMITER = web.AppKey[RateLimiter | None]("billing_rate_limiter")
COMMITTER = web.AppKey("committer", Committer)
# Customers and meters billing knows: rejections under METER_STRICT, warnings otherwise.
KNOWN_NAMES = web.AppKey("known_names", KnownNames)
# Hard-limit blocks of the tenants this process ingests for (meter/limits.py).
HARD_LIMITS = web.AppKey("hard_limits", Blocks)
BILLING = web.AppKey("billing", Billing)
USAGE_PLANS = web.AppKey("usage_plans", PlanCache)
# Per tenant: (monotonic time read, its price mappings and dimension versions), meter/usage/api.py.
USAGE_PRICED = web.AppKey("usage_priced", dict)
USAGE_PENDING = web.AppKey("usage_pending", PendingReads)
USAGE_SNAPSHOTS = web.AppKey("usage_snapshots", Batcher[ItemUsage, Snapshot])
# The one connection usage snapshots are read on (meter/usage/queries.py SNAPSHOT_SETTINGS).
USAGE_PG = web.AppKey("usage_pg", asyncpg.Pool)

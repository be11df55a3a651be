"""`setup(app)`: the usage API's routes and its plan cache, added to meter's app in one call."""

from __future__ import annotations

from aiohttp import web

from meter import appkeys
from meter.usage import api
from meter.usage.store import PlanCache

USAGE = "/v1/customers/{id}/usage"


def setup(app: web.Application) -> None:
    app[appkeys.USAGE_PLANS] = PlanCache()
    app.router.add_get(USAGE, api.usage)
    app.router.add_get(USAGE + "/history", api.history)

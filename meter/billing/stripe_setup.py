"""`meter stripe setup CATALOGUE`: make a Stripe account hold a catalogue file's meters,
products, prices, webhook endpoint and event destination (docs/stripe-setup.md).

Idempotent: each object is found first — a meter by its event name (one active meter per event
name), a product by its `meter_product` metadata, a price by its lookup key, the webhook
endpoint and the thin-event destination by their URL — and only what differs is sent. Lists,
not Stripe's search, which is eventually consistent and could miss what a run a moment ago
created. Prices are immutable in
Stripe: a price whose amount, tiers, package, interval or meter changed is replaced by a new one
that takes the lookup key over (`transfer_lookup_key`), and the old one is archived (existing
subscriptions keep it). A run stopped between the two leaves the old price active without
its key; the next run archives every active price of a catalogue product whose `meter_price`
metadata names a lookup key it no longer holds. A meter's formula cannot change either: that is
reported, not "fixed".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import stripe

from meter.billing.catalogue import (
    PRICE_KEY,
    PRODUCT_KEY,
    Catalogue,
    Change,
    MeterSpec,
    Obj,
    PriceSpec,
    ProductSpec,
    changed_fields,
    metadata_update,
    meter_params,
    price_differences,
    price_params,
    product_params,
)
from meter.billing.stripe_events import HANDLERS
from meter.billing.stripe_gateway import translate
from meter.config import Settings, check_stripe_api_version
from meter.errors import ConfigError
from meter.stripe_client import stripe_client

# Thin events (API v2 notifications, `v1.`/`v2.` types) reach only an event destination with a
# thin payload, never a v1 webhook endpoint, whose `enabled_events` takes snapshot types
# (https://docs.stripe.com/api/v2/core/events/event-types,
# https://docs.stripe.com/api/v2/event-destinations/create).
THIN_PREFIXES = ("v1.", "v2.")
ENDPOINT_METADATA = {"meter": "billing"}
DESTINATION_URL = "webhook_endpoint.url"
# Stripe returns a destination's signing secret only in the create answer, and only if asked.
DESTINATION_SECRET = "webhook_endpoint.signing_secret"
LIST_LIMIT = 100
LOOKUP_KEYS_PER_LIST = 10  # Stripe: "You can specify up to 10 lookup_keys" (list prices)
# Writes retried by the SDK carry the idempotency key it makes for each request, so a retry
# never creates twice.
NETWORK_RETRIES = 2


def is_thin(event_type: str) -> bool:
    return event_type.startswith(THIN_PREFIXES)


def webhook_events() -> list[str]:
    """The snapshot events billing handles: what the webhook endpoint subscribes to."""
    return sorted(t for t in HANDLERS if not is_thin(t))


def thin_events() -> list[str]:
    """The thin events billing handles: they need an event destination of their own."""
    return sorted(t for t in HANDLERS if is_thin(t))


def is_live_key(api_key: str) -> bool:
    return api_key.startswith(("sk_live_", "rk_live_"))


def check_mode(api_key: str, *, live: bool) -> None:
    """Test mode unless `--live` is given: a live key alone is refused before any request."""
    if is_live_key(api_key) and not live:
        raise ConfigError(
            "STRIPE_API_KEY is a live-mode key: meter stripe setup changes live products and "
            "prices only with --live"
        )
    if live and not is_live_key(api_key):
        raise ConfigError("--live given, but STRIPE_API_KEY is not a live-mode key")


@dataclass(slots=True)
class SetupResult:
    changes: list[Change] = field(default_factory=list)
    # The new endpoint's signing secret: Stripe shows it only in the create response.
    signing_secret: str | None = None
    # The new event destination's (thin events), shown only when created with `include`.
    destination_secret: str | None = None
    warnings: list[str] = field(default_factory=list)
    # Differences Stripe cannot apply in place and that setup does not resolve for you.
    conflicts: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)


def _dict(obj: Any) -> Obj:
    data: Obj = obj.to_dict(recursive=True)
    return data


class CatalogueApi:
    """The Stripe calls setup makes, as plain dicts; SDK errors become MeteringErrors."""

    def __init__(self, client: stripe.StripeClient) -> None:
        self.v1 = client.v1
        self.v2 = client.v2
        self._raw = client

    async def _call(self, fn: Any, *args: Any) -> Obj:
        try:
            return _dict(await fn(*args))
        except stripe.StripeError as exc:
            raise translate(exc) from None

    async def _all(self, service: Any, params: Mapping[str, Any]) -> list[Obj]:
        found: list[Obj] = []
        after: str | None = None
        while True:
            page_params: Any = {**params, "limit": LIST_LIMIT}
            if after:
                page_params["starting_after"] = after
            page = await self._call(service.list_async, page_params)
            found.extend(page["data"])
            if not page.get("has_more") or not page["data"]:
                return found
            after = page["data"][-1]["id"]

    async def meters(self) -> list[Obj]:
        return await self._all(self.v1.billing.meters, {})

    async def create_meter(self, params: Obj) -> Obj:
        return await self._call(self.v1.billing.meters.create_async, params)

    async def update_meter(self, id_: str, params: Obj) -> Obj:
        return await self._call(self.v1.billing.meters.update_async, id_, params)

    async def reactivate_meter(self, id_: str) -> Obj:
        return await self._call(self.v1.billing.meters.reactivate_async, id_)

    async def products(self) -> list[Obj]:
        return await self._all(self.v1.products, {})

    async def create_product(self, params: Obj) -> Obj:
        return await self._call(self.v1.products.create_async, params)

    async def update_product(self, id_: str, params: Obj) -> Obj:
        return await self._call(self.v1.products.update_async, id_, params)

    async def prices(self, lookup_keys: Sequence[str]) -> dict[str, Obj]:
        """The prices holding these lookup keys (active or archived), tiers expanded."""
        found: dict[str, Obj] = {}
        for i in range(0, len(lookup_keys), LOOKUP_KEYS_PER_LIST):
            chunk = list(lookup_keys[i : i + LOOKUP_KEYS_PER_LIST])
            params = {"lookup_keys": chunk, "expand": ["data.tiers"]}
            for price in await self._all(self.v1.prices, params):
                found[price["lookup_key"]] = price
        return found

    async def active_prices(self, product_id: str) -> list[Obj]:
        return await self._all(self.v1.prices, {"product": product_id, "active": True})

    async def create_price(self, params: Obj) -> Obj:
        return await self._call(self.v1.prices.create_async, {**params, "expand": ["tiers"]})

    async def update_price(self, id_: str, params: Obj) -> Obj:
        return await self._call(self.v1.prices.update_async, id_, params)

    async def webhook_endpoints(self) -> list[Obj]:
        return await self._all(self.v1.webhook_endpoints, {})

    async def create_webhook_endpoint(self, params: Obj) -> Obj:
        return await self._call(self.v1.webhook_endpoints.create_async, params)

    async def update_webhook_endpoint(self, id_: str, params: Obj) -> Obj:
        return await self._call(self.v1.webhook_endpoints.update_async, id_, params)

    async def event_destinations(self) -> list[Obj]:
        """Every event destination, with its URL (redacted unless included)."""
        found: list[Obj] = []
        page = await self._call(
            self.v2.core.event_destinations.list_async,
            {"include": [DESTINATION_URL], "limit": LIST_LIMIT},
        )
        found.extend(page["data"])
        # v2 lists page by `next_page_url`; meter makes one destination, so one page is the
        # norm: the rest are fetched the same way.
        while page.get("next_page_url"):
            page = await self._call(self._next_page, page["next_page_url"])
            found.extend(page["data"])
        return found

    async def _next_page(self, url: str) -> Any:
        return await self._raw.raw_request_async("get", url)

    async def create_event_destination(self, params: Obj) -> Obj:
        return await self._call(self.v2.core.event_destinations.create_async, params)

    async def update_event_destination(self, id_: str, params: Obj) -> Obj:
        return await self._call(self.v2.core.event_destinations.update_async, id_, params)

    async def enable_event_destination(self, id_: str) -> Obj:
        return await self._call(self.v2.core.event_destinations.enable_async, id_)


class DryRunApi(CatalogueApi):
    """Reads Stripe, writes nothing: each write answers what Stripe would, with `(new)` ids."""

    NEW = "(new)"

    def __init__(self, client: stripe.StripeClient) -> None:
        super().__init__(client)
        self._meters: dict[str, Obj] = {}

    async def meters(self) -> list[Obj]:
        found = await super().meters()
        self._meters = {m["id"]: m for m in found}
        return found

    async def create_meter(self, params: Obj) -> Obj:
        return {**params, "id": self.NEW, "status": "active"}

    async def update_meter(self, id_: str, params: Obj) -> Obj:
        return {"id": id_, **params}

    async def reactivate_meter(self, id_: str) -> Obj:
        return {**self._meters[id_], "status": "active"}

    async def create_product(self, params: Obj) -> Obj:
        return {**params, "id": self.NEW}

    async def update_product(self, id_: str, params: Obj) -> Obj:
        return {"id": id_, **params}

    async def create_price(self, params: Obj) -> Obj:
        return {**params, "id": self.NEW}

    async def update_price(self, id_: str, params: Obj) -> Obj:
        return {"id": id_, **params}

    async def create_webhook_endpoint(self, params: Obj) -> Obj:
        return {**params, "id": self.NEW, "secret": None}

    async def update_webhook_endpoint(self, id_: str, params: Obj) -> Obj:
        return {"id": id_, **params}

    async def create_event_destination(self, params: Obj) -> Obj:
        return {**params, "id": self.NEW, "webhook_endpoint": {"signing_secret": None}}

    async def update_event_destination(self, id_: str, params: Obj) -> Obj:
        return {"id": id_, **params}

    async def enable_event_destination(self, id_: str) -> Obj:
        return {"id": id_, "status": "enabled"}


def _formula(meter: Obj) -> str | None:
    formula: str | None = (meter.get("default_aggregation") or {}).get("formula")
    return formula


async def _meters(
    api: CatalogueApi, specs: Sequence[MeterSpec], out: SetupResult
) -> dict[str, str]:
    """Each meter's Stripe id by event name."""
    existing = await api.meters()
    ids: dict[str, str] = {}
    for spec in specs:
        same_name = [m for m in existing if m["event_name"] == spec.event_name]
        meter = next((m for m in same_name if m["status"] == "active"), None)
        actions: list[str] = []
        if meter is None:
            # An inactive meter with the same formula comes back; otherwise a new one.
            revivable = next((m for m in same_name if _formula(m) == spec.formula), None)
            if revivable is None:
                meter = await api.create_meter(meter_params(spec))
                out.changes.append(Change("meter", spec.event_name, "created", meter["id"]))
                ids[spec.event_name] = meter["id"]
                continue
            meter = await api.reactivate_meter(revivable["id"])
            actions.append("reactivated")
        ids[spec.event_name] = meter["id"]
        if _formula(meter) != spec.formula:
            out.conflicts.append(
                f"meter {spec.event_name}: Stripe meter {meter['id']} has formula "
                f"{_formula(meter)!r}, the catalogue says {spec.formula!r}; a meter's formula "
                "cannot change: deactivate it and run setup again (its prices must move too)"
            )
        if meter.get("display_name") != spec.display_name:
            await api.update_meter(meter["id"], {"display_name": spec.display_name})
            actions.append("display_name")
        action = "updated" if actions else "unchanged"
        out.changes.append(
            Change("meter", spec.event_name, action, meter["id"], ", ".join(actions))
        )
    return ids


async def _products(
    api: CatalogueApi, specs: Sequence[ProductSpec], out: SetupResult
) -> dict[str, str]:
    """Each product's Stripe id by catalogue key."""
    by_key: dict[str, Obj] = {}
    for product in await api.products():
        key = (product.get("metadata") or {}).get(PRODUCT_KEY)
        # The oldest wins if someone made two: it is the one prices were made on.
        if key and (key not in by_key or product["created"] < by_key[key]["created"]):
            by_key[key] = product
    ids: dict[str, str] = {}
    for spec in specs:
        want = product_params(spec)
        have = by_key.get(spec.key)
        if have is None:
            created = await api.create_product(want)
            out.changes.append(Change("product", spec.key, "created", created["id"]))
            ids[spec.key] = created["id"]
            continue
        ids[spec.key] = have["id"]
        update = changed_fields(have, want)
        if not have.get("active", True):
            update["active"] = True
        if md := metadata_update(have.get("metadata") or {}, want["metadata"]):
            update["metadata"] = md
        if update:
            await api.update_product(have["id"], update)
            out.changes.append(
                Change("product", spec.key, "updated", have["id"], ", ".join(sorted(update)))
            )
        else:
            out.changes.append(Change("product", spec.key, "unchanged", have["id"]))
    return ids


async def _price(
    api: CatalogueApi,
    spec: PriceSpec,
    have: Obj | None,
    product_id: str,
    meter_id: str | None,
    out: SetupResult,
) -> None:
    want = price_params(spec, product_id, meter_id)
    if have is None:
        created = await api.create_price(want)
        out.changes.append(Change("price", spec.lookup_key, "created", created["id"]))
        return
    diffs = price_differences(spec, have, product_id, meter_id)
    if diffs:
        # 1. The new price takes the lookup key over, atomically (Stripe's `transfer_lookup_key`),
        #    so the key never names no price or two. 2. Then the old one is archived: existing
        #    subscriptions keep billing on it; a crash between leaves it active, without the key,
        #    and the next run's `_archive_replaced` finishes step 2.
        created = await api.create_price({**want, "transfer_lookup_key": True})
        if have.get("active"):
            await api.update_price(have["id"], {"active": False})
        out.changes.append(
            Change(
                "price",
                spec.lookup_key,
                "replaced",
                created["id"],
                f"{', '.join(diffs)} changed; {have['id']} archived, its subscriptions keep it",
            )
        )
        return
    update: Obj = {}
    if spec.nickname is not None and have.get("nickname") != spec.nickname:
        update["nickname"] = spec.nickname
    if not have.get("active"):
        update["active"] = True
    if md := metadata_update(have.get("metadata") or {}, want["metadata"]):
        update["metadata"] = md
    if update:
        await api.update_price(have["id"], update)
        detail = ", ".join(sorted(update))
        out.changes.append(Change("price", spec.lookup_key, "updated", have["id"], detail))
    else:
        out.changes.append(Change("price", spec.lookup_key, "unchanged", have["id"]))


async def _archive_replaced(
    api: CatalogueApi, product_ids: Sequence[str], out: SetupResult
) -> None:
    """Archive the active prices setup made (`meter_price` metadata) that no longer hold the
    lookup key they were made for: they lost it to a replacement (`transfer_lookup_key` is the
    only way a key leaves a price) and a run stopped before archiving them. Archived, not
    deleted: subscriptions on them keep billing, as after an uninterrupted replacement."""
    for product_id in product_ids:
        if product_id == DryRunApi.NEW:
            continue  # a dry run's product that does not exist yet has no prices
        for price in await api.active_prices(product_id):
            made_for = (price.get("metadata") or {}).get(PRICE_KEY)
            if made_for and price.get("lookup_key") != made_for:
                await api.update_price(price["id"], {"active": False})
                out.changes.append(
                    Change(
                        "price",
                        made_for,
                        "archived",
                        price["id"],
                        "replaced before, left active by a run that stopped",
                    )
                )


async def _webhook(api: CatalogueApi, url: str, out: SetupResult) -> None:
    events = webhook_events()
    endpoints = await api.webhook_endpoints()
    mine = next((e for e in endpoints if e["url"] == url), None)
    for other in endpoints:
        if other is not mine and (other.get("metadata") or {}) == ENDPOINT_METADATA:
            out.warnings.append(
                f"webhook endpoint {other['id']} ({other['url']}) was made for meter too; "
                "delete it if that address is no longer yours, or it gets every event as well"
            )
    if mine is None:
        created = await api.create_webhook_endpoint(
            {
                "url": url,
                "enabled_events": events,
                # Events are rendered in the version meter reads, whatever the account's default.
                "api_version": stripe.api_version,
                "description": "meter billing",
                "metadata": ENDPOINT_METADATA,
            }
        )
        out.signing_secret = created.get("secret")
        out.changes.append(Change("webhook endpoint", url, "created", created["id"]))
        return
    update: Obj = {}
    if sorted(mine.get("enabled_events") or []) != events:
        update["enabled_events"] = events
    if mine.get("status") != "enabled":
        update["disabled"] = False
    if mine.get("api_version") not in (None, stripe.api_version):
        out.warnings.append(
            f"webhook endpoint {mine['id']} renders events in API version "
            f"{mine['api_version']}, meter reads {stripe.api_version}: an endpoint's version "
            "cannot change; delete it and run setup again (it prints the new signing secret)"
        )
    if update:
        await api.update_webhook_endpoint(mine["id"], update)
        detail = ", ".join(sorted(update))
        out.changes.append(Change("webhook endpoint", url, "updated", mine["id"], detail))
    else:
        out.changes.append(Change("webhook endpoint", url, "unchanged", mine["id"]))


def destination_params(url: str) -> Obj:
    """The create parameters of meter's thin-event destination at `url`, its secret included."""
    return {
        "name": "meter billing",
        "description": "meter billing: meter error reports",
        "type": "webhook_endpoint",
        "event_payload": "thin",
        "enabled_events": thin_events(),
        "webhook_endpoint": {"url": url},
        "include": [DESTINATION_SECRET],
        "metadata": ENDPOINT_METADATA,
    }


def _destination_url(destination: Obj) -> str | None:
    url: str | None = (destination.get("webhook_endpoint") or {}).get("url")
    return url


async def _event_destination(api: CatalogueApi, url: str, out: SetupResult) -> None:
    """The event destination that sends billing's thin events to `url` (the webhook URL: one
    route takes both kinds), found by URL, thin payload and type."""
    events = thin_events()
    if not events:
        return
    mine = next(
        (
            d
            for d in await api.event_destinations()
            if d.get("type") == "webhook_endpoint"
            and d.get("event_payload") == "thin"
            and _destination_url(d) == url
        ),
        None,
    )
    if mine is None:
        created = await api.create_event_destination(destination_params(url))
        out.destination_secret = (created.get("webhook_endpoint") or {}).get("signing_secret")
        out.changes.append(Change("event destination", url, "created", created["id"]))
        return
    actions: list[str] = []
    if sorted(mine.get("enabled_events") or []) != events:
        await api.update_event_destination(mine["id"], {"enabled_events": events})
        actions.append("enabled_events")
    if mine.get("status") != "enabled":
        await api.enable_event_destination(mine["id"])
        actions.append("enabled")
    action = "updated" if actions else "unchanged"
    out.changes.append(Change("event destination", url, action, mine["id"], ", ".join(actions)))


async def apply(
    api: CatalogueApi, catalogue: Catalogue, *, webhook_url: str | None = None
) -> SetupResult:
    """Make Stripe hold `catalogue`: meters, then products, then prices (which name both), then
    the webhook endpoint at `webhook_url` (or the catalogue's) when there is one, and the event
    destination that sends billing's thin events to the same URL."""
    out = SetupResult()
    meter_ids = await _meters(api, catalogue.meters, out)
    product_ids = await _products(api, catalogue.products, out)
    pairs = catalogue.prices()
    existing = await api.prices([price.lookup_key for _, price in pairs])
    for product, price in pairs:
        meter_id = meter_ids[price.meter] if price.meter is not None else None
        await _price(
            api, price, existing.get(price.lookup_key), product_ids[product.key], meter_id, out
        )
    await _archive_replaced(api, list(product_ids.values()), out)
    url = webhook_url or catalogue.webhook_url
    if url:
        await _webhook(api, url, out)
        await _event_destination(api, url, out)
    return out


async def setup_stripe(
    settings: Settings,
    catalogue: Catalogue,
    *,
    webhook_url: str | None = None,
    live: bool = False,
    dry_run: bool = False,
) -> SetupResult:
    """`apply` with the Stripe account of `settings` (STRIPE_API_KEY, and the emulator's base
    addresses when they are set), after the mode check; `dry_run` reads and writes nothing."""
    api_key = settings.stripe_api_key
    if not api_key:
        raise ConfigError("meter stripe setup needs STRIPE_API_KEY (a test-mode key: sk_test_…)")
    check_mode(api_key, live=live)
    check_stripe_api_version(stripe.api_version)
    http = stripe.AIOHTTPClient(timeout=settings.billing_stripe_timeout_s)
    client = stripe_client(
        api_key,
        api_base=settings.stripe_api_base,
        meter_events_base=settings.stripe_meter_events_base,
        http_client=http,
        max_network_retries=NETWORK_RETRIES,
    )
    try:
        api = DryRunApi(client) if dry_run else CatalogueApi(client)
        return await apply(api, catalogue, webhook_url=webhook_url)
    finally:
        if http._cached_session is not None:
            await http.close_async()

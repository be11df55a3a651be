"""The catalogue file (YAML): the meters, products, prices and webhook endpoint that
`meter stripe setup` makes a Stripe account hold and `meter dev` seeds the emulator with.
The format is in docs/stripe-setup.md.

Here: reading and checking the file (every problem at once, each with its place), and what a
Stripe object must look like to match an entry, as plain dicts in Stripe's wire shape. No call
to Stripe is made here (meter/billing/stripe_setup.py makes them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from meter.billing.rules import FEATURES_KEY, LIMIT_PREFIX, REPORTABLE_FORMULAS
from meter.errors import ConfigError

# Product metadata that names the catalogue entry: products have no lookup key.
PRODUCT_KEY = "meter_product"
# Price metadata that names the lookup key setup made the price for: a price that carries it but
# no longer holds that key lost it to a replacement, and is archived (stripe_setup.py).
PRICE_KEY = "meter_price"
INTERVALS = ("day", "week", "month", "year")
TIERS_MODES = ("graduated", "volume")
ROUNDINGS = ("up", "down")
# Stripe's limits (API reference: billing meter `event_name`, price `lookup_key`,
# `unit_amount_decimal` "at most 12 decimal places").
MAX_EVENT_NAME = 100
MAX_LOOKUP_KEY = 200
MAX_DECIMALS = 12

Obj = dict[str, Any]


class CatalogueError(ConfigError):
    """The file is not a valid catalogue; `problems` says where and why, one line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: not a valid catalogue:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class MeterSpec:
    event_name: str
    display_name: str
    formula: str


@dataclass(frozen=True, slots=True)
class Tier:
    up_to: int | None  # None: the last tier, up to infinity
    unit_amount: Decimal
    flat_amount: Decimal | None


@dataclass(frozen=True, slots=True)
class Package:
    divide_by: int
    round: str


@dataclass(frozen=True, slots=True)
class PriceSpec:
    lookup_key: str
    currency: str
    interval: str
    interval_count: int
    meter: str | None  # the event name of the meter it is metered on; None: licensed
    unit_amount: Decimal | None  # minor units (cents), per unit or per package
    tiers_mode: str | None
    tiers: tuple[Tier, ...]
    package: Package | None
    nickname: str | None
    metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ProductSpec:
    key: str
    name: str
    description: str | None
    metadata: Mapping[str, str]
    prices: tuple[PriceSpec, ...]


@dataclass(frozen=True, slots=True)
class Catalogue:
    meters: tuple[MeterSpec, ...] = ()
    products: tuple[ProductSpec, ...] = ()
    webhook_url: str | None = None
    source: str = "catalogue"

    def prices(self) -> list[tuple[ProductSpec, PriceSpec]]:
        return [(product, price) for product in self.products for price in product.prices]


# -- reading -------------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"{key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load(path: Path | str) -> Catalogue:
    """The catalogue in the file at `path`; CatalogueError (a ConfigError) when it is not one."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the catalogue {source}: {exc.strerror or exc}") from None
    return parse_text(text, source)


def parse_text(text: str, source: str = "catalogue") -> Catalogue:
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise CatalogueError(source, [f"not YAML: {exc}"]) from None
    return parse(doc, source)


class _Problems:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, where: str, why: str) -> None:
        self.lines.append(f"{where}: {why}")


def _known(doc: Mapping[str, Any], allowed: tuple[str, ...], where: str, out: _Problems) -> None:
    for name in doc:
        if name not in allowed:
            out.add(where, f"unknown field {name!r} (one of: {', '.join(allowed)})")


def _str(doc: Mapping[str, Any], name: str, where: str, out: _Problems) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        out.add(f"{where}.{name}", "must be a non-empty string")
        return None
    return value


def _amount(value: Any, where: str, out: _Problems) -> Decimal | None:
    """An amount in the currency's minor unit: an integer, or a decimal (quote it: "0.5")."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        out.add(where, 'must be an amount in minor units (cents), e.g. 120 or "0.5"')
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        out.add(where, f"{value!r} is not a number")
        return None
    if not amount.is_finite() or amount < 0:
        out.add(where, "must be a non-negative number")
        return None
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_DECIMALS:
        out.add(where, f"at most {MAX_DECIMALS} decimal places (Stripe's limit)")
        return None
    return amount


def _metadata(doc: Mapping[str, Any], where: str, out: _Problems) -> dict[str, str]:
    """`metadata`, plus the entitlement convention billing reads (meter/billing/rules.py):
    `features` (a list) → "a,b"; `limits` ({meter: number}) → `limit.<meter>`."""
    md: dict[str, str] = {}
    raw = doc.get("metadata")
    if raw is not None:
        if not isinstance(raw, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str | int | float) and not isinstance(v, bool)
            for k, v in raw.items()
        ):
            out.add(f"{where}.metadata", "must map names to strings or numbers")
        else:
            md.update({k: str(v) for k, v in raw.items()})
    for key in md:
        if _is_managed(key):
            out.add(f"{where}.metadata.{key}", "is set by the catalogue (use features / limits)")
    features = doc.get("features")
    if features is not None:
        if not isinstance(features, list) or not all(
            isinstance(f, str) and f.strip() and "," not in f for f in features
        ):
            out.add(f"{where}.features", "must be a list of names (without commas)")
        else:
            md[FEATURES_KEY] = ",".join(f.strip() for f in features)
    limits = doc.get("limits")
    if limits is not None:
        if not isinstance(limits, Mapping):
            out.add(f"{where}.limits", "must map meter names to numbers")
        else:
            for meter, value in limits.items():
                amount = _amount(value, f"{where}.limits.{meter}", out)
                if amount is not None:
                    md[f"{LIMIT_PREFIX}{meter}"] = format(amount.normalize(), "f")
    return md


def _meter(name: Any, doc: Any, out: _Problems) -> MeterSpec | None:
    where = f"meters.{name}"
    if not isinstance(name, str) or not 0 < len(name) <= MAX_EVENT_NAME:
        out.add(where, f"a meter's name (its event name) is 1..{MAX_EVENT_NAME} characters")
        return None
    doc = {} if doc is None else doc
    if not isinstance(doc, Mapping):
        out.add(where, "must be a mapping (display_name, formula)")
        return None
    _known(doc, ("display_name", "formula"), where, out)
    formula = doc.get("formula", "sum")
    if formula not in REPORTABLE_FORMULAS:
        out.add(
            f"{where}.formula",
            f"{formula!r} is not one meter reports to: {' or '.join(sorted(REPORTABLE_FORMULAS))}"
            " (count, max and unique_count meters use sum or last with `meter meters define`)",
        )
        return None
    display = _str(doc, "display_name", where, out) or name
    return MeterSpec(event_name=name, display_name=display, formula=formula)


def _tiers(raw: Any, where: str, out: _Problems) -> tuple[Tier, ...]:
    if not isinstance(raw, list) or not raw:
        out.add(where, "must be a non-empty list of {up_to, unit_amount, flat_amount}")
        return ()
    tiers: list[Tier] = []
    previous = 0
    for i, tier in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(tier, Mapping):
            out.add(at, "must be a mapping")
            continue
        _known(tier, ("up_to", "unit_amount", "flat_amount"), at, out)
        raw_up_to = tier.get("up_to")
        last = i == len(raw) - 1
        up_to = raw_up_to if type(raw_up_to) is int else None
        if last and raw_up_to != "inf":
            out.add(f"{at}.up_to", 'the last tier goes up to "inf"')
        elif not last and (up_to is None or up_to <= 0):
            out.add(f"{at}.up_to", 'must be a whole number of units ("inf" only for the last)')
        elif not last and up_to is not None and up_to <= previous:
            out.add(f"{at}.up_to", "tiers go up: each up_to is above the previous one")
        if up_to is not None:
            previous = up_to
        unit = _amount(tier.get("unit_amount", 0), f"{at}.unit_amount", out)
        flat = tier.get("flat_amount")
        flat_amount = None if flat is None else _amount(flat, f"{at}.flat_amount", out)
        if unit is not None:
            tiers.append(Tier(None if last else up_to, unit, flat_amount))
    return tuple(tiers)


PRICE_FIELDS = (
    "currency",
    "interval",
    "interval_count",
    "meter",
    "unit_amount",
    "tiers_mode",
    "tiers",
    "package",
    "nickname",
    "features",
    "limits",
    "metadata",
)


def _price(key: Any, doc: Any, where: str, meters: set[str], out: _Problems) -> PriceSpec | None:
    if not isinstance(key, str) or not 0 < len(key) <= MAX_LOOKUP_KEY:
        out.add(where, f"a price's name (its lookup key) is 1..{MAX_LOOKUP_KEY} characters")
        return None
    if not isinstance(doc, Mapping):
        out.add(where, "must be a mapping")
        return None
    before = len(out.lines)
    _known(doc, PRICE_FIELDS, where, out)
    currency = _str(doc, "currency", where, out)
    if currency is None:
        out.add(f"{where}.currency", "is required (a three-letter ISO code, e.g. usd)")
    interval = doc.get("interval", "month")
    if interval not in INTERVALS:
        out.add(f"{where}.interval", f"one of {', '.join(INTERVALS)}")
    count = doc.get("interval_count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        out.add(f"{where}.interval_count", "must be a whole number ≥ 1")
    meter = _str(doc, "meter", where, out)
    if meter is not None and meter not in meters:
        out.add(f"{where}.meter", f"{meter!r} is not under `meters`")
    unit: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    mode = doc.get("tiers_mode")
    if "tiers" in doc or mode is not None:
        if "unit_amount" in doc:
            out.add(where, "give unit_amount or tiers, not both")
        if mode not in TIERS_MODES:
            out.add(f"{where}.tiers_mode", f"one of {', '.join(TIERS_MODES)} (with tiers)")
        tiers = _tiers(doc.get("tiers"), f"{where}.tiers", out)
    elif "unit_amount" in doc:
        unit = _amount(doc["unit_amount"], f"{where}.unit_amount", out)
    else:
        out.add(where, "needs unit_amount (per unit or per package) or tiers_mode and tiers")
    package = None
    if (raw := doc.get("package")) is not None:
        if not isinstance(raw, Mapping):
            out.add(f"{where}.package", "must be {divide_by, round}")
        else:
            _known(raw, ("divide_by", "round"), f"{where}.package", out)
            divide_by, rounding = raw.get("divide_by"), raw.get("round", "up")
            if isinstance(divide_by, bool) or not isinstance(divide_by, int) or divide_by < 1:
                out.add(f"{where}.package.divide_by", "must be a whole number ≥ 1")
            elif rounding not in ROUNDINGS:
                out.add(f"{where}.package.round", "up or down")
            else:
                package = Package(divide_by, rounding)
        if "tiers" in doc:
            out.add(f"{where}.package", "cannot be combined with tiers (Stripe's rule)")
    metadata = _metadata(doc, where, out)
    if len(out.lines) > before or currency is None:
        return None
    return PriceSpec(
        lookup_key=key,
        currency=currency.lower(),
        interval=interval,
        interval_count=count,
        meter=meter,
        unit_amount=unit,
        tiers_mode=mode if tiers else None,
        tiers=tiers,
        package=package,
        nickname=_str(doc, "nickname", where, out),
        metadata=metadata,
    )


def _product(key: Any, doc: Any, meters: set[str], out: _Problems) -> ProductSpec | None:
    where = f"products.{key}"
    if not isinstance(key, str) or not key.strip():
        out.add(where, "a product's name (its key) is a non-empty string")
        return None
    if not isinstance(doc, Mapping):
        out.add(where, "must be a mapping (name, prices, ...)")
        return None
    fields = ("name", "description", "features", "limits", "metadata", "prices")
    _known(doc, fields, where, out)
    name = _str(doc, "name", where, out) or key
    prices_doc = doc.get("prices") or {}
    if not isinstance(prices_doc, Mapping):
        out.add(f"{where}.prices", "must map lookup keys to prices")
        prices_doc = {}
    prices = [_price(k, v, f"{where}.prices.{k}", meters, out) for k, v in prices_doc.items()]
    return ProductSpec(
        key=key,
        name=name,
        description=_str(doc, "description", where, out),
        metadata={**_metadata(doc, where, out), PRODUCT_KEY: key},
        prices=tuple(p for p in prices if p is not None),
    )


def parse(doc: Any, source: str = "catalogue") -> Catalogue:
    """The catalogue of a parsed YAML document; CatalogueError naming every problem."""
    out = _Problems()
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise CatalogueError(source, ["the file must be a mapping (meters, products, webhook)"])
    _known(doc, ("meters", "products", "webhook"), "catalogue", out)
    meters_doc = doc.get("meters") or {}
    products_doc = doc.get("products") or {}
    if not isinstance(meters_doc, Mapping):
        out.add("meters", "must map event names to meters")
        meters_doc = {}
    if not isinstance(products_doc, Mapping):
        out.add("products", "must map product keys to products")
        products_doc = {}
    meters = [_meter(name, m, out) for name, m in meters_doc.items()]
    names = {str(name) for name in meters_doc}
    products = [_product(key, p, names, out) for key, p in products_doc.items()]
    # Checked on the file's names, so that a duplicate is named even beside other problems.
    lookup_keys: dict[str, str] = {}
    for key, product_doc in products_doc.items():
        prices_doc = product_doc.get("prices") if isinstance(product_doc, Mapping) else None
        for lookup_key in prices_doc if isinstance(prices_doc, Mapping) else ():
            if lookup_key in lookup_keys:
                out.add(
                    f"products.{key}.prices.{lookup_key}",
                    f"lookup key also used under products.{lookup_keys[lookup_key]} "
                    "(a lookup key names one price in a Stripe account)",
                )
            else:
                lookup_keys[lookup_key] = str(key)
    webhook_url = None
    if (webhook := doc.get("webhook")) is not None:
        if not isinstance(webhook, Mapping):
            out.add("webhook", "must be a mapping (url)")
        else:
            _known(webhook, ("url",), "webhook", out)
            webhook_url = _str(webhook, "url", "webhook", out)
    if out.lines:
        raise CatalogueError(source, out.lines)
    return Catalogue(
        meters=tuple(m for m in meters if m is not None),
        products=tuple(p for p in products if p is not None),
        webhook_url=webhook_url,
        source=source,
    )


# -- what Stripe must hold -----------------------------------------------------------------------
def _dec(value: Decimal) -> str:
    return format(value.normalize(), "f")


def meter_params(spec: MeterSpec) -> Obj:
    """A Stripe billing meter for `spec`, with the payload keys meter's reporter sends."""
    return {
        "display_name": spec.display_name,
        "event_name": spec.event_name,
        "default_aggregation": {"formula": spec.formula},
    }


def product_params(spec: ProductSpec) -> Obj:
    params: Obj = {"name": spec.name, "metadata": dict(spec.metadata)}
    if spec.description is not None:
        params["description"] = spec.description
    return params


def price_params(spec: PriceSpec, product_id: str, meter_id: str | None) -> Obj:
    """The create-price parameters for `spec` (with its lookup key)."""
    recurring: Obj = {"interval": spec.interval, "interval_count": spec.interval_count}
    if meter_id is not None:
        recurring["usage_type"] = "metered"
        recurring["meter"] = meter_id
    params: Obj = {
        "product": product_id,
        "currency": spec.currency,
        "recurring": recurring,
        "lookup_key": spec.lookup_key,
        "metadata": {**spec.metadata, PRICE_KEY: spec.lookup_key},
    }
    if spec.nickname is not None:
        params["nickname"] = spec.nickname
    if spec.tiers:
        params["billing_scheme"] = "tiered"
        params["tiers_mode"] = spec.tiers_mode
        params["tiers"] = [
            {
                "up_to": "inf" if t.up_to is None else t.up_to,
                "unit_amount_decimal": _dec(t.unit_amount),
                **({} if t.flat_amount is None else {"flat_amount_decimal": _dec(t.flat_amount)}),
            }
            for t in spec.tiers
        ]
    else:
        assert spec.unit_amount is not None
        params["unit_amount_decimal"] = _dec(spec.unit_amount)
    if spec.package is not None:
        params["transform_quantity"] = {
            "divide_by": spec.package.divide_by,
            "round": spec.package.round,
        }
    return params


def _stripe_decimal(obj: Mapping[str, Any], name: str) -> Decimal | None:
    raw = obj.get(f"{name}_decimal")
    if raw is None:
        raw = obj.get(name)
    return None if raw is None else Decimal(str(raw))


def price_differences(
    spec: PriceSpec, price: Mapping[str, Any], product_id: str, meter_id: str | None
) -> list[str]:
    """The fields of an existing Stripe price (with `tiers` expanded) that differ from `spec`
    and that Stripe cannot change in place: such a price is replaced by a new one."""
    diffs: list[str] = []
    recurring = price.get("recurring") or {}
    if price.get("product") != product_id:
        diffs.append("product")
    if price.get("currency") != spec.currency:
        diffs.append("currency")
    if (recurring.get("interval"), recurring.get("interval_count")) != (
        spec.interval,
        spec.interval_count,
    ):
        diffs.append("interval")
    usage = "metered" if meter_id is not None else "licensed"
    if recurring.get("usage_type") != usage or (recurring.get("meter") or None) != meter_id:
        diffs.append("meter")
    if spec.tiers:
        if price.get("billing_scheme") != "tiered" or price.get("tiers_mode") != spec.tiers_mode:
            diffs.append("tiers_mode")
        have = [
            (
                t.get("up_to"),
                _stripe_decimal(t, "unit_amount") or Decimal(0),
                _stripe_decimal(t, "flat_amount") or Decimal(0),
            )
            for t in price.get("tiers") or []
        ]
        want = [(t.up_to, t.unit_amount, t.flat_amount or Decimal(0)) for t in spec.tiers]
        if have != want:
            diffs.append("tiers")
    elif price.get("billing_scheme") == "tiered":
        diffs.append("tiers_mode")
    elif _stripe_decimal(price, "unit_amount") != spec.unit_amount:
        diffs.append("unit_amount")
    transform = price.get("transform_quantity")
    have_package = None if not transform else (transform["divide_by"], transform["round"])
    want_package = None if spec.package is None else (spec.package.divide_by, spec.package.round)
    if have_package != want_package:
        diffs.append("package")
    return diffs


def _is_managed(key: str) -> bool:
    return key in (FEATURES_KEY, PRODUCT_KEY, PRICE_KEY) or key.startswith(LIMIT_PREFIX)


def metadata_update(have: Mapping[str, str], want: Mapping[str, str]) -> dict[str, str]:
    """What to send to make `have` hold `want`: changed keys, and "" (Stripe's unset) for the
    entitlement keys the catalogue no longer gives. Other keys someone added stay."""
    update = {k: v for k, v in want.items() if have.get(k) != v}
    update.update({k: "" for k in have if _is_managed(k) and k not in want})
    return update


def changed_fields(obj: Mapping[str, Any], want: Mapping[str, Any]) -> dict[str, Any]:
    """The plain fields of `want` that `obj` does not hold (metadata is compared apart)."""
    return {k: v for k, v in want.items() if k != "metadata" and obj.get(k) != v}


@dataclass(slots=True)
class Change:
    """One line of `meter stripe setup`'s report."""

    kind: str  # meter | product | price | webhook endpoint
    name: str
    action: str  # created | updated | replaced | archived | reactivated | unchanged
    id: str
    detail: str = ""
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        tail = f" ({self.detail})" if self.detail else ""
        return f"{self.kind} {self.name}: {self.action} {self.id}{tail}"

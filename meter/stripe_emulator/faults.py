"""Fault rules: which request gets which failure. Matching is pure; the middleware acts on it.

A rule names a path glob (and optionally a method), a mode, and how often: for the next `count`
matching requests, or each with `probability`. Modes:

- `rate_limit`: 429 with Stripe's rate-limit error, nothing applied.
- `error`: `status` (500/503/…) with an `api_error`, nothing applied.
- `latency`: wait `delay` seconds, then serve normally.
- `timeout`: wait `delay` seconds (past the client's timeout), then serve; the client has given up.
- `drop`: apply the request, then close the connection without answering (crash-after-send).
"""

from __future__ import annotations

import fnmatch
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from meter.stripe_emulator.wire import Obj, StripeError, invalid, new_id

MODES = ("rate_limit", "error", "latency", "timeout", "drop")


@dataclass
class FaultRule:
    path: str
    mode: str
    method: str | None = None
    status: int = 500
    count: int | None = 1
    probability: float = 1.0
    delay: float = 0.0
    id: str = field(default_factory=lambda: new_id("fault", 12))
    hits: int = 0

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> FaultRule:
        """Build a rule from the control API's JSON, with Stripe-style 400s on bad input."""
        mode = params.get("mode")
        if mode not in MODES:
            raise invalid(f"mode must be one of {', '.join(MODES)}", "mode")
        path = params.get("path")
        if not isinstance(path, str) or not path:
            raise invalid("path (a glob such as /v1/billing/*) is required", "path")
        count = params.get("count", 1)
        probability = float(params.get("probability", 1.0))
        if not 0.0 <= probability <= 1.0:
            raise invalid("probability must be within [0, 1]", "probability")
        default_delay = 30.0 if mode == "timeout" else 0.0
        return cls(
            path=path,
            mode=mode,
            method=(params.get("method") or None) and str(params["method"]).upper(),
            status=int(params.get("status", 429 if mode == "rate_limit" else 500)),
            count=None if count is None else int(count),
            probability=probability,
            delay=float(params.get("delay", default_delay)),
        )

    def to_json(self) -> Obj:
        return asdict(self)


class FaultTable:
    """The active rules, first match wins; a seeded RNG keeps probabilistic tests repeatable."""

    def __init__(self, seed: int | None = None) -> None:
        self.rules: list[FaultRule] = []
        self._rng = random.Random(seed)

    def add(self, rule: FaultRule) -> FaultRule:
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    def seed(self, seed: int) -> None:
        self._rng.seed(seed)

    def pick(self, method: str, path: str) -> FaultRule | None:
        """The rule that fires for this request, if any; consumes one of its `count`."""
        for rule in self.rules:
            if rule.method and rule.method != method.upper():
                continue
            if not fnmatch.fnmatchcase(path, rule.path):
                continue
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                continue
            rule.hits += 1
            if rule.count is not None:
                rule.count -= 1
                if rule.count <= 0:
                    self.rules.remove(rule)
            return rule
        return None


def fault_error(rule: FaultRule, v2: bool) -> StripeError:
    """The error body Stripe sends for an injected 429 or 5xx."""
    if rule.mode == "rate_limit":
        return StripeError(
            429,
            "Request rate limit exceeded. Learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
            type_="rate_limit" if v2 else "invalid_request_error",
            code="rate_limit",
        )
    return StripeError(
        rule.status,
        "An unknown error occurred (injected by the emulator).",
        type_="api_error",
    )

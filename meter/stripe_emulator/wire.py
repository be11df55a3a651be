"""Stripe's wire format: nested form decoding, error objects, list objects, ids.

Everything here is pure (no app state), so the handlers stay thin and this can be unit-tested.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

Obj = dict[str, Any]

_ID_ALPHABET = string.ascii_letters + string.digits
_KEY_PART = re.compile(r"\[([^\]]*)\]")


class StripeError(Exception):
    """An error Stripe would answer with; `to_body()` is the exact `{"error": ...}` document."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def to_body(self) -> Obj:
        error: Obj = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


def invalid(message: str, param: str | None = None, code: str | None = None) -> StripeError:
    """The common 400 `invalid_request_error`."""
    return StripeError(400, message, param=param, code=code)


def missing(param: str) -> StripeError:
    return invalid(f"Missing required param: {param}.", param, "parameter_missing")


def not_found(kind: str, id_: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {kind}: '{id_}'", param=param, code="resource_missing")


def new_id(prefix: str, length: int = 24) -> str:
    """An id shaped like Stripe's: prefix, underscore, random base62."""
    return prefix + "_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def decode_form(pairs: Iterable[tuple[str, str]]) -> Obj:
    """Rebuild nested params from Stripe form keys.

    `items[0][price]=p` → `{"items": [{"price": "p"}]}`, `expand[]=a` → `{"expand": ["a"]}`,
    `metadata[k]=v` → `{"metadata": {"k": "v"}}`. Numeric parts become list indexes, which is how
    stripe-python encodes every list.
    """
    root: Obj = {}
    for key, value in pairs:
        head = key.split("[", 1)[0]
        parts = [head, *_KEY_PART.findall(key[len(head) :])]
        _assign(root, parts, value)
    decoded: Obj = _listify(root)
    return decoded


def _assign(node: Obj, parts: list[str], value: str) -> None:
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "":
            # `expand[]` style: append under a fresh index.
            part = str(sum(1 for k in node if k.isdigit()))
        if last:
            node[part] = value
            return
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def now_ts() -> int:
    return int(datetime.now(UTC).timestamp())


def rfc3339(ts: float) -> str:
    """v2 timestamps are RFC 3339 strings with millisecond precision."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_rfc3339(value: str, param: str) -> float:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"Invalid timestamp: {value!r}", param) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
    )


def error_response(exc: StripeError) -> web.Response:
    response = json_response(exc.to_body(), exc.status)
    response.headers.update(exc.headers)
    return response


def paginate(
    items: Sequence[Obj], params: Mapping[str, Any], url: str, *, newest_first: bool = True
) -> Obj:
    """A Stripe list object over `items` honouring limit/starting_after/ending_before.

    Stripe lists are newest first; `items` comes in creation order.
    """
    ordered = list(reversed(items)) if newest_first else list(items)
    limit = int_param(params, "limit", 10)
    if not 1 <= limit <= 100:
        raise invalid("Invalid integer: limit must be between 1 and 100", "limit")
    ids = [item["id"] for item in ordered]
    if after := params.get("starting_after"):
        if after not in ids:
            raise not_found("object", str(after), "starting_after")
        start = ids.index(after) + 1
        page = ordered[start : start + limit]
        has_more = start + limit < len(ordered)
    elif before := params.get("ending_before"):
        if before not in ids:
            raise not_found("object", str(before), "ending_before")
        end = ids.index(before)
        page = ordered[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        page = ordered[:limit]
        has_more = limit < len(ordered)
    return {"object": "list", "data": page, "has_more": has_more, "url": url}


def int_param(params: Mapping[str, Any], name: str, default: int | None = None) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise missing(name)
        return default
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise invalid(f"Invalid integer: {raw}", name) from None


def str_param(params: Mapping[str, Any], name: str) -> str:
    raw = params.get(name)
    if raw is None or raw == "":
        raise missing(name)
    if not isinstance(raw, str):
        raise invalid(f"Invalid string: {name}", name)
    return raw


def bool_param(params: Mapping[str, Any], name: str, default: bool = False) -> bool:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        return raw
    if raw in ("true", "false"):
        return bool(raw == "true")
    raise invalid(f"Invalid boolean: {raw}", name)


def merge_metadata(current: Mapping[str, str], update: Any) -> dict[str, str]:
    """Stripe merges metadata keys; an empty string (or an empty `metadata=`) deletes."""
    if update == "":
        return {}
    if not isinstance(update, dict):
        raise invalid("Invalid metadata: must be an object", "metadata")
    merged = dict(current)
    for key, value in update.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return merged


def expand_paths(params: Mapping[str, Any]) -> list[str]:
    raw = params.get("expand", [])
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list):
        return [str(p) for p in raw]
    raise invalid("Invalid array", "expand")


def expand(
    obj: Obj, paths: Iterable[str], lookup: Callable[[str], Obj | None], *, in_list: bool = False
) -> Obj:
    """Replace ids by the objects they name along each dotted path (copying, never in place)."""
    result = dict(obj)
    for path in paths:
        parts = path.split(".")
        if in_list and parts[0] == "data":
            result["data"] = [_expand_one(dict(o), parts[1:], lookup, path) for o in result["data"]]
        else:
            result = _expand_one(result, parts, lookup, path)
    return result


def _expand_one(obj: Obj, parts: list[str], lookup: Callable[[str], Obj | None], path: str) -> Obj:
    if not parts:
        return obj
    head, rest = parts[0], parts[1:]
    if head not in obj:
        raise invalid(f"This property cannot be expanded ({path}).", "expand")
    value = obj[head]
    out = dict(obj)
    if isinstance(value, str):
        target = lookup(value)
        if target is None:
            raise invalid(f"This property cannot be expanded ({path}).", "expand")
        out[head] = _expand_one(dict(target), rest, lookup, path)
    elif isinstance(value, list):  # e.g. a subscription's `discounts`: ids, each expandable
        out[head] = [
            _expand_one(dict(t), rest, lookup, path)
            if isinstance(v, str) and (t := lookup(v)) is not None
            else (_expand_one(v, rest, lookup, path) if isinstance(v, dict) else v)
            for v in value
        ]
    elif isinstance(value, dict):
        if value.get("object") == "list" and rest and rest[0] == "data":
            out[head] = {
                **value,
                "data": [_expand_one(dict(v), rest[1:], lookup, path) for v in value["data"]],
            }
        else:
            out[head] = _expand_one(value, rest, lookup, path)
    return out


# Fields Stripe leaves out of an object unless the request expands them (per object type), at
# any depth: `tiers` on a retrieved price, `data.tiers` on a list of prices,
# `items.data.price.tiers` on a subscription. Never in webhook payloads: an event carries the
# object as stored, with nothing expanded.
INCLUDABLE = {"price": frozenset({"tiers"})}


def hide_includable(value: Any, expanded: Collection[str] = (), path: str = "") -> Any:
    """`value` without the includable fields whose dotted path is not in `expanded` (the
    request's `expand[]`; a list's elements share the list's path, as in `data.tiers`)."""
    if isinstance(value, dict):
        hidden = INCLUDABLE.get(value.get("object") or "", frozenset())
        out: dict[str, Any] = {}
        for key, item in value.items():
            at = f"{path}.{key}" if path else key
            if key in hidden and at not in expanded:
                continue
            out[key] = hide_includable(item, expanded, at)
        return out
    if isinstance(value, list):
        return [hide_includable(v, expanded, path) for v in value]
    return value


def strip_private(value: Any) -> Any:
    """Drop the emulator's bookkeeping (`_`-prefixed keys) from anything bound for the wire."""
    if isinstance(value, dict):
        return {k: strip_private(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [strip_private(v) for v in value]
    return value

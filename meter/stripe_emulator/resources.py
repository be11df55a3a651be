"""Helpers shared by the resource modules: field updates with `previous_attributes`, deletes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from meter.stripe_emulator.core import Req
from meter.stripe_emulator.wire import Obj, bool_param, merge_metadata


def apply_updates(req: Req, obj: Obj, fields: Iterable[str], booleans: Iterable[str] = ()) -> Obj:
    """Copy the given params onto `obj` ("" unsets); returns the previous values that changed."""
    previous: Obj = {}
    for name in fields:
        if name in req.params:
            raw: Any = req.params[name]
            value = None if raw == "" else raw
            if obj.get(name) != value:
                previous[name] = obj.get(name)
                obj[name] = value
    for name in booleans:
        if name in req.params:
            value = bool_param(req.params, name)
            if obj.get(name) != value:
                previous[name] = obj.get(name)
                obj[name] = value
    if "metadata" in req.params:
        merged = merge_metadata(obj.get("metadata") or {}, req.params["metadata"])
        if merged != obj.get("metadata"):
            previous["metadata"] = obj.get("metadata")
            obj["metadata"] = merged
    return previous


def deleted(obj: Obj) -> Obj:
    return {"id": obj["id"], "object": obj["object"], "deleted": True}


def metadata_of(req: Req) -> dict[str, str]:
    return merge_metadata({}, req.params.get("metadata") or {})

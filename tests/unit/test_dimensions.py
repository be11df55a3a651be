"""Pure rules of meter dimensions: keys, combination texts, versions over time, the guard."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

import pytest

from meter import dimensions as d
from meter.errors import InvalidRequest


def test_keys_are_checked() -> None:
    assert d.parse_keys("model, region") == ("model", "region")
    assert d.parse_keys("") == ()
    for bad in ("a,b,c,d", "model,model", "bad key", "_x"):
        with pytest.raises(InvalidRequest):
            d.parse_keys(bad)
    with pytest.raises(InvalidRequest):
        d.parse_keys([1])  # type: ignore[list-item]


def test_combination_is_canonical_and_missing_keys_are_none() -> None:
    keys = ("model", "region")
    a = d.combination({"region": "eu", "model": "large", "x": 1}, keys)
    b = d.combination({"model": "large", "region": "eu"}, keys)
    assert a == b == '{"model":"large","region":"eu"}'
    assert d.values_of(d.combination({"model": "small"}, keys), keys) == {
        "model": "small",
        "region": "none",
    }
    assert d.combination({"model": None}, ("model",)) == d.combination(None, ("model",))
    assert d.combination({"model": 1}, ("model",)) != d.combination({"model": "x1"}, ("model",))
    assert d.combination({"model": 1}, ()) == d.NO_DIMENSIONS
    assert d.values_of(d.OTHER, keys) == {"model": "_other", "region": "_other"}
    assert d.values_of("", keys) == {"model": "none", "region": "none"}


def test_versions_apply_from_their_start() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = [
        ("t", "m", t0 + dt.timedelta(hours=2), ["region", "model"]),
        ("t", "m", t0, ["model"]),
        ("t", "plain", t0, []),
    ]
    index = d.index_versions(rows)
    assert ("t", "plain") not in index
    v = index[("t", "m")]
    ms = int(t0.timestamp() * 1000)
    assert v.at(ms - 1) == ()
    assert v.at(ms) == ("model",)
    assert v.at(ms + 2 * 3600_000 - 1) == ("model",)
    assert v.at(ms + 2 * 3600_000) == ("model", "region")


def test_effective_from_is_never_in_the_past() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert d.check_effective_from(now, now) == now
    with pytest.raises(InvalidRequest):
        d.check_effective_from(now - dt.timedelta(seconds=1), now)
    with pytest.raises(InvalidRequest):
        d.check_effective_from(dt.datetime(2027, 1, 1), now)


def test_guard_admits_in_order_up_to_the_limit_then_other() -> None:
    wanted = [("s", "a"), ("s", "b"), ("s", "a"), ("s", "c"), ("u", "c"), ("s", "b")]
    out, new = d.admit(wanted, {("s", "z")}, {"s": 1}, limit=2)
    assert out[("s", "a")] == "a"  # room for one more besides z
    assert out[("s", "b")] == d.OTHER
    assert out[("s", "c")] == d.OTHER
    assert out[("u", "c")] == "c"
    assert new == [("s", "a"), ("u", "c")]
    # Already admitted combinations stay, even in a full set.
    out, new = d.admit([("s", "z")], {("s", "z")}, {"s": 2}, limit=2)
    assert out[("s", "z")] == "z"
    assert new == []


def test_guard_is_independent_of_how_the_stream_is_cut() -> None:
    """One pass over all pairs equals passes over consecutive parts with the sets committed in
    between: what makes a replay with another batch size choose the same `_other`."""
    wanted = [("s", str(i % 7)) for i in range(40)] + [("s", "x"), ("t", "y")]
    whole, _ = d.admit(wanted, set(), {}, limit=4)
    known: set[tuple[object, str]] = set()
    sizes: dict[object, int] = {}
    parts: dict[tuple[object, str], str] = {}
    for i in range(0, len(wanted), 5):
        out, new = d.admit(wanted[i : i + 5], known, sizes, limit=4)
        parts |= out
        for s, c in new:
            known.add((s, c))
            sizes[s] = sizes.get(s, 0) + 1
    assert parts == whole


def test_describe() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    later = now + dt.timedelta(days=1)
    assert d.describe([(now, ["model"]), (later, [])], now) == (
        f"model (from {later.isoformat()}: -)"
    )
    assert d.describe([], now) == "-"


def test_route_sends_a_mapped_combination_to_its_event_name() -> None:
    maps = [
        d.PriceMapping((("model", "large"),), "tokens_large"),
        d.PriceMapping((("model", "none"),), "tokens_bare"),
    ]
    keys = ("model", "region")
    assert d.route(d.combination({"model": "large", "region": "eu"}, keys), "tokens", maps) == (
        "tokens_large"
    )
    assert d.route(d.combination({"region": "eu"}, keys), "tokens", maps) == "tokens_bare"
    assert d.route(d.combination({"model": "small"}, keys), "tokens", maps) == "tokens"
    assert d.route(d.OTHER, "tokens", maps) == "tokens"
    assert d.route(d.NO_DIMENSIONS, "tokens", maps) == "tokens"
    assert d.route(d.combination({"model": "large"}, keys), "tokens", []) == "tokens"


def test_parse_filter() -> None:
    assert d.parse_filter("region=eu, model=large") == (("model", "large"), ("region", "eu"))
    for bad in ("model", "model=", "model=a,model=b", "a=1,b=1,c=1,e=1", "bad key=1"):
        with pytest.raises(InvalidRequest):
            d.parse_filter(bad)


def test_shared_admissions_depend_on_the_limit_only() -> None:
    assert d.shared_admissions(1000) == 15
    assert d.shared_admissions(3) == 1
    assert d.shared_admission_holds(760, 16, 1000)
    assert not d.shared_admission_holds(761, 16, 1000)
    assert not d.shared_admission_holds(0, 4, 3)  # a tiny limit: always exclusive


def _simulate(holds: Callable[[int, int, int], bool], writers: int, limit: int, seed: int) -> int:
    """The largest committed size of one set when `writers` flushes run the guard's protocol
    (lock shared or exclusive, read the committed size, admit, commit) in a random interleaving;
    `holds(size, writers, limit)` decides whether a shared holder may admit."""
    rng = random.Random(seed)
    b = d.shared_admissions(limit)
    committed = 0
    largest = 0
    # Per writer: None (idle) or (mode, size read or None, admissions decided or None).
    state: list[tuple[str, int | None, int | None] | None] = [None] * writers
    for _ in range(400):
        w = rng.randrange(writers)
        s = state[w]
        holders = [x for x in state if x is not None]
        if s is None:
            wants = rng.randint(1, 2 * b)
            mode = "shared" if wants <= b else "exclusive"
            if (mode == "exclusive" and holders) or any(x[0] == "exclusive" for x in holders):
                continue  # would wait
            state[w] = (mode, None, wants)
        elif s[1] is None:
            mode, _, wants = s
            assert wants is not None
            if mode == "shared" and not holds(committed, writers, limit):
                state[w] = None  # rolled back to the savepoint: next time exclusively
                continue
            room = limit - committed
            state[w] = (mode, committed, min(wants, max(room, 0)))
        else:
            committed += s[2] or 0
            largest = max(largest, committed)
            state[w] = None
    return largest


def test_shared_holders_never_exceed_the_limit_in_any_interleaving() -> None:
    for seed in range(300):
        assert _simulate(d.shared_admission_holds, writers=4, limit=20, seed=seed) <= 20
    # The oracle can fail: shared holders checking only their own room go over.
    assert any(
        _simulate(lambda size, n, limit: size < limit, writers=4, limit=20, seed=seed) > 20
        for seed in range(300)
    )

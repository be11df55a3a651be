"""Tenant names and composite key parts (meter/names.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meter.billing.api import idempotency_key
from meter.errors import InvalidRequest
from meter.names import check_tenant, key_part
from meter.redis_keys import Keys


@pytest.mark.parametrize("name", ["acme", "a", "ACME-2.eu_west", "0", "x" * 64])
def test_tenant_names(name: str) -> None:
    assert check_tenant(name) == name


@pytest.mark.parametrize("name", ["", "acme:x", "a b", "-a", ".a", "x" * 65, "é", "a\x00", "a%"])
def test_not_tenant_names(name: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        check_tenant(name)
    assert raised.value.param == "tenant"


def test_parts_without_separators_are_unchanged() -> None:
    """Keys of valid tenants and plain ids are what they were: no dedupe key changes."""
    assert key_part("acme") == "acme"
    assert Keys("meter").dedupe(3, "acme", "x:inv-42") == "meter:{s03}:dedupe:acme:x:inv-42"
    assert idempotency_key("cancel", "sub_1", "now", 7) == "meter:cancel:sub_1:now:7"


def test_the_reported_collisions_are_gone() -> None:
    keys = Keys("meter")
    assert keys.dedupe(1, "acme", "x:inv-42") != keys.dedupe(1, "acme:x", "inv-42")
    assert idempotency_key("customer-create", "acme", "x:c1") != idempotency_key(
        "customer-create", "acme:x", "c1"
    )


names = st.text(min_size=1, max_size=12)


@given(names, names, names, names)
def test_distinct_pairs_give_distinct_keys(t1: str, e1: str, t2: str, e2: str) -> None:
    keys = Keys("p")
    if (t1, e1) != (t2, e2):
        assert keys.dedupe(0, t1, e1) != keys.dedupe(0, t2, e2)
        assert idempotency_key("a", t1, e1) != idempotency_key("a", t2, e2)

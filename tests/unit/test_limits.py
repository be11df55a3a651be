"""meter/limits.py's pure parts: reading a tenant's hash of blocks."""

from __future__ import annotations

from meter import limits


def test_blocks_in_force_are_read_by_field_and_ended_or_malformed_ones_skipped() -> None:
    raw: dict[bytes | str, bytes | str] = {
        b"cus_1\x1fcalls": b'{"rule": "r1", "until_ms": 2000}',
        b"cus_2\x1fcalls": b'{"rule": "r2", "until_ms": 1000}',  # ended at now
        b"cus_3\x1fcalls": b"not json",
        b"cus_4\x1fcalls": b'{"until_ms": 5000}',
    }
    assert limits.parse(raw, now_ms=1000) == {"cus_1\x1fcalls": limits.Block("r1", 2000)}


def test_the_message_names_the_rule_and_the_meter() -> None:
    text = limits.refusal(limits.Block("rule_9", 7), "cus_1", "calls")
    assert "'rule_9'" in text
    assert "'calls'" in text
    assert "'cus_1'" in text
    assert limits.field("cus_1", "calls") == "cus_1\x1fcalls"


def test_every_customer_a_field_may_name_is_in_the_prefilter() -> None:
    entry = limits.Block("r", 1)
    found = limits.TenantBlocks.of({"cus_1\x1fcalls": entry, "a\x1fb\x1fc": entry})
    # "a\x1fb\x1fc" is customer "a" with meter "b\x1fc", or customer "a\x1fb" with meter "c".
    assert found.customers == {"cus_1", "a", "a\x1fb"}
    assert limits.NO_BLOCKS.customers == frozenset()

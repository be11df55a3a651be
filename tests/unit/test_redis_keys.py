from hypothesis import given
from hypothesis import strategies as st

from meter.redis_keys import Keys, shard_of


@given(st.text(min_size=1), st.text(min_size=1, max_size=100), st.integers(1, 1024))
def test_shard_is_in_range_and_stable(tenant: str, event_id: str, shards: int) -> None:
    shard = shard_of(tenant, event_id, shards)
    assert 0 <= shard < shards
    assert shard == shard_of(tenant, event_id, shards)


def test_shard_spreads_ids() -> None:
    counts = [0] * 16
    for n in range(16_000):
        counts[shard_of("acme", f"evt-{n}", 16)] += 1
    assert min(counts) > 800  # roughly 1,000 each


def test_tenant_is_part_of_the_shard_and_dedupe_identity() -> None:
    keys = Keys("meter")
    assert keys.dedupe(3, "a", "x") != keys.dedupe(3, "b", "x")


def test_keys_of_a_shard_share_one_hash_tag() -> None:
    keys = Keys("meter")
    assert keys.stream(7) == "meter:{s07}:events"
    assert keys.dedupe(7, "acme", "evt-1") == "meter:{s07}:dedupe:acme:evt-1"
    assert keys.stream(7).split("{")[1].split("}")[0] == "s07"

import zlib

from hypothesis import given
from hypothesis import strategies as st

from meter.redis_keys import Keys, may_repeat_forgotten, recent_horizon_ms, shard_of


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


HOUR_MS = 3_600_000
TOLERANCE_S = 300.0


@given(
    window_s=st.integers(1, 49 * 3600),
    accepted_ms=st.integers(0, 10**13),
    lead_ms=st.integers(0, int(TOLERANCE_S * 1000)),
    after_ms=st.integers(0, 49 * HOUR_MS),
    skew_ms=st.integers(-20_000, 20_000),
)
def test_a_retry_redis_forgot_is_always_flagged(
    window_s: int, accepted_ms: int, lead_ms: int, after_ms: int, skew_ms: int
) -> None:
    """First copy accepted at A with a timestamp up to the future tolerance ahead; its key lives
    until A + window; the retry comes after that, read on a clock up to 20 s off."""
    timestamp = accepted_ms + lead_ms
    retried = accepted_ms + window_s * 1000 + after_ms + skew_ms
    horizon = recent_horizon_ms(window_s, TOLERANCE_S)
    assert may_repeat_forgotten(timestamp, retried, horizon)


def test_recent_explicit_timestamps_are_not_flagged_but_defaulted_ones_are() -> None:
    horizon = recent_horizon_ms(3600.0, TOLERANCE_S)  # 54 minutes
    now = 10**12
    assert not may_repeat_forgotten(now - 50 * 60_000, now, horizon)
    assert not may_repeat_forgotten(now + 60_000, now, horizon)
    assert may_repeat_forgotten(now - 55 * 60_000, now, horizon)
    assert may_repeat_forgotten(now, now, horizon)  # a timestamp left to default is "now"


def test_dedupe_prefixes_are_the_dedupe_keys_without_the_id() -> None:
    keys = Keys("meter")
    for tenant in ("acme", "a:b%c", ""):
        prefixes = keys.dedupe_prefixes(tenant, 16)
        assert len(prefixes) == 16
        for shard, prefix in enumerate(prefixes):
            assert prefix + "evt:1" == keys.dedupe(shard, tenant, "evt:1")


def test_shard_of_is_crc32_of_tenant_nul_id() -> None:
    # The documented rule (docs/configuration.md: changing it remaps every id), computed here
    # from the tenant's running crc; it must stay the crc of the whole text.
    for tenant, event_id in (("acme", "evt_1"), ("a:b", "é€😀"), ("", "")):
        expected = zlib.crc32(f"{tenant}\x00{event_id}".encode()) % 16
        assert shard_of(tenant, event_id, 16) == expected

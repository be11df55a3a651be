"""Retry timing of webhook deliveries (notifier/schedule.py) and the endpoint checks
(meter/webhooks/endpoints.py). Pure."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from meter.errors import InvalidRequest
from meter.webhooks import endpoints
from notifier import schedule

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_delays_are_full_jitter_under_a_growing_capped_ceiling() -> None:
    rng = random.Random(7)
    for attempt, ceiling in ((1, 30.0), (2, 60.0), (3, 120.0), (10, 3600.0), (200, 3600.0)):
        delays = [schedule.retry_delay(attempt, base=30.0, cap=3600.0, rng=rng) for _ in range(500)]
        assert min(delays) >= 0.0
        assert max(delays) <= ceiling
        assert max(delays) > 0.9 * ceiling  # the whole range is used, not just its top
        assert min(delays) < 0.1 * ceiling


def test_retries_stop_at_the_end_of_the_window() -> None:
    rng = random.Random(1)
    kw = {"base": 30.0, "cap": 3 * 3600.0, "retry_for": 3 * 86400.0, "rng": rng}
    end = T0 + dt.timedelta(days=3)
    assert schedule.next_attempt(end, T0, 40, **kw) is None  # type: ignore[arg-type]
    late = end - dt.timedelta(seconds=5)
    nxt = schedule.next_attempt(late, T0, 40, **kw)  # type: ignore[arg-type]
    assert nxt is not None
    assert late <= nxt <= end
    # The defaults retry for three days: dozens of attempts, not thousands.
    now, attempts = T0, 0
    while (at := schedule.next_attempt(now, T0, attempts + 1, **kw)) is not None:  # type: ignore[arg-type]
        now, attempts = at, attempts + 1
    assert 20 <= attempts <= 200


@pytest.mark.parametrize(
    "url",
    ["https://example.com/hook", "http://93.184.215.14:8080/x?y=1", "https://[2606:4700::1]/h"],
)
def test_good_urls(url: str) -> None:
    assert endpoints.check_url(url, allow_private=False) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x",
        "https://[::1]/h",
        "http://10.1.2.3/h",
        "http://192.168.0.10/h",
        "http://172.16.0.1/h",
        "http://100.64.0.1/h",  # shared (carrier-grade NAT)
        "http://169.254.169.254/latest/meta-data",  # a cloud's metadata service
        "http://0.0.0.0:9000/h",
        "http://[::ffff:127.0.0.1]/h",
        "http://[fe80::1]/h",
        "http://224.0.0.1/h",
        "http://localhost:8080/h",
        "http://LOCALHOST./h",
        "http://api.localhost/h",
        "http://2130706433/h",  # 127.0.0.1 as one number
        "http://0177.0.0.1/h",  # octal
        "http://127.1/h",
        "http://0x7f.0.0.1/h",
        "http://[64:ff9b::a9fe:a9fe]/h",  # NAT64 of 169.254.169.254
        "http://[2002:7f00:1::]/h",  # 6to4 of 127.0.0.1
        "http://[::ffff:0:7f00:1]/h",  # SIIT
        "http://[::7f00:1]/h",  # IPv4-compatible
    ],
)
def test_private_addresses_need_the_operators_consent(url: str) -> None:
    with pytest.raises(InvalidRequest, match="METER_NOTIFIER_PRIVATE_URLS") as raised:
        endpoints.check_url(url, allow_private=False)
    assert raised.value.param == "url"
    assert endpoints.check_url(url, allow_private=True) == url


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", False),
        ("2001:4860:4860::8888", False),
        ("127.0.0.2", True),
        ("::1", True),
        ("fe80::1%eth0", True),
        ("::ffff:10.0.0.1", True),
        ("::ffff:8.8.8.8", False),
        ("ff02::1", True),
        ("64:ff9b::808:808", False),  # NAT64 of 8.8.8.8
        ("2002:808:808::", False),  # 6to4 of 8.8.8.8
        ("example.com", False),  # a name is judged by what it resolves to, when connecting
    ],
)
def test_non_global_addresses(address: str, refused: bool) -> None:
    assert endpoints.non_global(address) is refused


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("", "required"),
        (None, "required"),
        ("example.com/hook", "http://"),
        ("ftp://example.com", "http://"),
        ("https://", "host"),
        ("https://exa mple.com", "spaces"),
        ("https://example.com/\x00", "control"),
        ("https://u:p@example.com", "credentials"),
        ("https://example.com/#frag", "fragment"),
        ("https://example.com/" + "a" * 2048, "longer"),
    ],
)
def test_bad_urls_say_why(url: object, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words) as raised:
        endpoints.check_url(url, allow_private=True)
    assert raised.value.param == "url"


def test_event_types() -> None:
    assert endpoints.check_event_types(["usage.limit_reached", "usage.limit_reached", "*"]) == [
        "usage.limit_reached",
        "*",
    ]
    assert endpoints.subscribes(["*"], "usage.limit_cleared")
    assert not endpoints.subscribes(["usage.limit_reached"], "usage.limit_cleared")
    for bad in ([], "usage.limit_reached", ["usage.other"], [None]):
        with pytest.raises(InvalidRequest):
            endpoints.check_event_types(bad)

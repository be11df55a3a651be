"""The v1 wire's integer timestamp is the second the instant lies in, never the next one."""

from __future__ import annotations

import datetime as dt

from reporter.transport import unix_seconds


def test_unix_seconds_floor() -> None:
    last = dt.datetime(2026, 11, 18, 23, 59, 59, 999_999, tzinfo=dt.UTC)
    assert unix_seconds(last) == 1_795_046_399
    assert unix_seconds(last + dt.timedelta(microseconds=1)) == 1_795_046_400
    assert unix_seconds(last.astimezone(dt.timezone(dt.timedelta(hours=-5)))) == 1_795_046_399

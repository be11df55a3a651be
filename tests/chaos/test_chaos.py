"""The chaos suite's short profile (tests/chaos/run.py) in the normal test run."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.chaos.run import SHORT, chaos, report

pytestmark = pytest.mark.timeout(420)  # the run bounds itself well under this


async def test_chaos_short(database_url: str, tmp_dir: Path) -> None:
    seed = int(os.environ.get("METER_CHAOS_SEED") or random.randrange(2**31))
    summary = await chaos(SHORT, seed, database_url, tmp_dir)
    print(report(summary))
    assert not summary.unanswered, report(summary)
    assert not summary.drift, report(summary)
    assert not summary.exited, report(summary)
    assert summary.in_count > 0

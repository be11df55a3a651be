"""The billing simulation's short profile (tests/simulation/run.py) in the normal test run.

`PENDING` switches off the usage mixes whose invariants the current code still breaks, each with
the defect it waits for (docs/simulation.md, "Mixes pending fixes"). Once those fixes are merged,
empty it (or set METER_SIM_ALL=1 to try everything now): the profile then runs every mix.
METER_SIM_SEED replays a seed.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.simulation.generator import BATCH_FEATURES, FEATURES, KINDS
from tests.simulation.run import SHORT, Options, simulate

pytestmark = pytest.mark.timeout(300)  # the short profile takes 30-60 s on 2 cores

PENDING: dict[str, str] = {
    "late": "late usage of a finalized period is sent into it, not carried (invariants 1-3)",
    "voids": "a void of a finalized period's event is sent into that period (invariants 1-2)",
    "grace_late": "usage reported after the period end, before finalization, is not in the "
    "invoice (the emulator prices metered lines at period end; invariant 1)",
    "edge_timestamps": "…59.9996Z is rounded into the next period, not floored (invariants 1, 3)",
    "tenants": "Stripe `last` formulas are synced for the billing tenant only (invariants 1, 3)",
    "early": "usage aggregated with METER_RAW_LOG=0 before its customer was known is lost at "
    "re-attribution (invariants 1, 2)",
    "coupon_tax": "our projection orders lines by item id, the invoice by the subscription's "
    "items: when two lines' discount shares tie, a cent of tax moves (invariant 3, ours)",
    "once_coupon": "a used-up `once` coupon stays in our projection until the next "
    "subscription update (invariant 3, ours vs preview)",
}


# Scenario kinds still failing, switched off here the same way (docs/simulation.md, "Kinds
# pending fixes").
PENDING_KINDS: dict[str, str] = {}


async def test_simulation_short(database_url: str, tmp_dir: Path) -> None:
    seed = int(os.environ.get("METER_SIM_SEED") or random.randrange(2**31))
    everything = set(FEATURES + BATCH_FEATURES)
    everything_on = bool(os.environ.get("METER_SIM_ALL"))
    features = everything if everything_on else everything - set(PENDING)
    kinds = tuple(k for k in KINDS if everything_on or k not in PENDING_KINDS)
    options = Options(
        seed=seed,
        scenarios=SHORT.scenarios,
        periods=SHORT.periods,
        batch=SHORT.batch,
        features=frozenset(features),
        kinds=kinds,
    )
    (result,) = await simulate(options, database_url, tmp_dir)
    print(result.report())
    assert result.ok, result.report()
    expected = sum(s.invoiced_periods(SHORT.periods) for s in result.scenarios)
    assert result.counts["finalized invoices checked"] == expected

"""Crash-test hook shared by the workers: `kill -9` this process at a named point.

`--fault after_commit:3` kills the process (SIGKILL, no clean-up) the 3rd time the point is
reached, so crash tests hit exact spots (such as between commit and XTRIM) instead of hoping a
sleep lands there. Each worker names its own points (see aggregator/flush.py, reporter/send.py).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Faults:
    plan: dict[str, int] = field(default_factory=dict)
    seen: Counter[str] = field(default_factory=Counter)

    @classmethod
    def parse(cls, specs: Iterable[str]) -> Faults:
        plan: dict[str, int] = {}
        for spec in specs:
            point, _, n = spec.partition(":")
            plan[point] = int(n or 1)
        return cls(plan)

    def hit(self, point: str) -> None:
        if point not in self.plan:
            return
        self.seen[point] += 1
        if self.seen[point] >= self.plan[point]:
            os.kill(os.getpid(), signal.SIGKILL)

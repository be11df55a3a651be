"""A local Stripe that the official SDK talks to unchanged: see README.md in this package."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meter.stripe_emulator.core import Emulator, EmulatorConfig

__all__ = ["Emulator", "EmulatorConfig"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `meter <any command>` registering the emulator's subcommand does not import
    # the emulator (and the stripe SDK and aiohttp with it): ~0.8 s of every process start.
    if name in __all__:
        from meter.stripe_emulator import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

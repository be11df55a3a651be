"""A local Stripe that the official SDK talks to unchanged: see README.md in this package."""

from meter.stripe_emulator.core import Emulator, EmulatorConfig

__all__ = ["Emulator", "EmulatorConfig"]

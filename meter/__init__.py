"""meter: usage metering and billing on Redis, Postgres and Stripe Billing Meters."""

__version__ = "0.1.0"

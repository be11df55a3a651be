"""Billing settings from the environment."""

from __future__ import annotations

import pytest

from meter.config import Settings
from meter.errors import ConfigError


def test_billing_settings_from_env() -> None:
    s = Settings.from_env(
        {
            "METER_BILLING_TENANT": "acme",
            "METER_BILLING_GRACE_PERIOD": "3d",
            "METER_BILLING_DUNNING_SCHEDULE": "2d, 0, 1h",
            "METER_BILLING_JOB_INTERVAL": "30s",
            "METER_BILLING_NOTIFY_URL": "https://hooks.example/dunning",
            "METER_BILLING_NOTIFY_SECRET": "whsec_dunning_receiver_key",
        }
    )
    assert s.billing_default_tenant == "acme"
    assert s.billing_grace_period_s == 3 * 86400
    assert s.billing_dunning_schedule == (0.0, 3600.0, 2 * 86400.0)
    assert s.billing_job_interval_s == 30
    assert s.billing_notify_url == "https://hooks.example/dunning"
    defaults = Settings.from_env({})
    assert defaults.billing_dunning_schedule == (0.0, 3 * 86400.0, 6 * 86400.0)
    assert defaults.billing_notify_url is None
    with pytest.raises(ConfigError):
        Settings.from_env({"METER_BILLING_DUNNING_SCHEDULE": "soon"})
    # An unsigned notice is anyone's POST: the URL needs its secret.
    for secret in ({}, {"METER_BILLING_NOTIFY_SECRET": "short"}):
        with pytest.raises(ConfigError, match="METER_BILLING_NOTIFY_SECRET"):
            Settings.from_env({"METER_BILLING_NOTIFY_URL": "https://hooks.example/d", **secret})

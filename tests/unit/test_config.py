import pytest

from meter.config import Settings, parse_duration
from meter.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("48h", 172800.0),
        ("35d", 3024000.0),
        ("90s", 90.0),
        ("1.5m", 90.0),
        ("30", 30.0),
        ("250ms", 0.25),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-1h", "2w", "1h30m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_defaults_from_empty_env() -> None:
    s = Settings.from_env({})
    assert (s.shards, s.late_window_s, s.host, s.port, s.strict) == (
        16,
        48 * 3600.0,
        "127.0.0.1",
        8080,
        False,
    )


def test_from_env_reads_every_documented_variable() -> None:
    s = Settings.from_env(
        {
            "METER_DATABASE_URL": "postgresql://x/db",
            "METER_REDIS_URL": "redis://r:1/2",
            "STRIPE_API_KEY": "sk_test_1",
            "STRIPE_WEBHOOK_SECRET": "whsec_1",
            "STRIPE_API_BASE": "http://127.0.0.1:12111",
            "STRIPE_METER_EVENTS_BASE": "http://127.0.0.1:12112",
            "METER_SHARDS": "8",
            "METER_LATE_WINDOW": "2d",
            "METER_DEDUPE_WINDOW": "90m",
            "METER_HOST": "0.0.0.0",
            "METER_PORT": "9000",
            "METER_LOG_LEVEL": "DEBUG",
            "METER_LOG_FORMAT": "Text",
            "METER_STRICT": "1",
            "METER_REDIS_WAIT_REPLICAS": "1",
            "METER_REDIS_WAIT_TIMEOUT": "250ms",
        }
    )
    assert s.database_url == "postgresql://x/db"
    assert s.redis_url == "redis://r:1/2"
    assert s.stripe_api_key == "sk_test_1"
    assert s.stripe_webhook_secret == "whsec_1"
    assert s.stripe_api_base == "http://127.0.0.1:12111"
    assert s.stripe_meter_events_base == "http://127.0.0.1:12112"
    assert (s.shards, s.late_window_s, s.host, s.port) == (8, 172800.0, "0.0.0.0", 9000)
    assert s.dedupe_window_s == 5400.0
    assert s.log_level == "debug"
    assert s.log_format == "text"
    assert s.strict is True
    assert (s.redis_wait_replicas, s.redis_wait_timeout_s) == (1, 0.25)


@pytest.mark.parametrize(
    "env",
    [
        {"METER_SHARDS": "0"},
        {"METER_SHARDS": "many"},
        {"METER_LATE_WINDOW": "36d"},
        {"METER_LOG_LEVEL": "loud"},
        {"METER_LOG_FORMAT": "yaml"},
        {"METER_PORT": "http"},
        {"METER_REDIS_WAIT_REPLICAS": "-1"},
        {"METER_REDIS_WAIT_TIMEOUT": "5s"},
        {"METER_REPORTER_INVOICE_GRACE": "36d"},
        {"METER_DEDUPE_WINDOW": "0"},
        {"METER_LATE_WINDOW": "6h", "METER_DEDUPE_WINDOW": "7h1s"},
        {"METER_NOTIFIER_TIMEOUT": "61s"},
        {"METER_NOTIFIER_BACKOFF_BASE": "4h"},  # above the 3h cap
        {"METER_NOTIFIER_CONCURRENCY": "0"},
        {"METER_NOTIFIER_DISABLE_MIN_FAILURES": "0"},
        {"METER_NOTIFIER_METRICS_PORT": "70000"},
        {"METER_NOTIFIER_RETENTION": "1d"},  # under the 3d of retries
    ],
)
def test_invalid_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_notifier_settings_from_env() -> None:
    s = Settings.from_env(
        {
            "METER_NOTIFIER_TIMEOUT": "5s",
            "METER_NOTIFIER_BACKOFF_BASE": "1m",
            "METER_NOTIFIER_BACKOFF_CAP": "1h",
            "METER_NOTIFIER_RETRY_FOR": "2d",
            "METER_NOTIFIER_DISABLE_AFTER": "1d",
            "METER_NOTIFIER_DISABLE_MIN_FAILURES": "10",
            "METER_NOTIFIER_BATCH_SIZE": "20",
            "METER_NOTIFIER_CONCURRENCY": "4",
            "METER_NOTIFIER_POLL_INTERVAL": "2s",
            "METER_NOTIFIER_METRICS_PORT": "9103",
        }
    )
    assert (s.notifier_timeout_s, s.notifier_backoff_base_s, s.notifier_backoff_cap_s) == (
        5.0,
        60.0,
        3600.0,
    )
    assert (s.notifier_retry_for_s, s.notifier_disable_after_s) == (172800.0, 86400.0)
    assert (s.notifier_disable_min_failures, s.notifier_batch_size) == (10, 20)
    assert (s.notifier_concurrency, s.notifier_poll_interval_s) == (4, 2.0)
    assert s.notifier_metrics_port == 9103


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.shards = 3  # type: ignore[misc]


def test_the_locked_stripe_sdk_speaks_meters_api_version() -> None:
    import stripe

    from meter.config import STRIPE_API_VERSION, check_stripe_api_version

    check_stripe_api_version(stripe.api_version)
    assert stripe.api_version == STRIPE_API_VERSION
    with pytest.raises(ConfigError, match="2025-01-01"):
        check_stripe_api_version("2025-01-01.acacia")


def test_the_invoice_grace_leaves_a_margin_below_stripes_hour() -> None:
    assert Settings.from_env({}).reporter_invoice_grace_s == 45 * 60.0
    assert (
        Settings.from_env({"METER_REPORTER_INVOICE_GRACE": "2h"}).reporter_invoice_grace_s == 7200
    )


def test_the_invoice_grace_stays_inside_stripes_timestamp_window() -> None:
    # Longer than Stripe's 72h is allowed (the reporter warns); past 35 days is not.
    assert Settings.from_env({"METER_REPORTER_INVOICE_GRACE": "5d"}).reporter_invoice_grace_s == (
        5 * 86400
    )
    with pytest.raises(ConfigError, match="35d"):
        Settings.from_env({"METER_REPORTER_INVOICE_GRACE": "36d"})


def test_the_dedupe_window_defaults_to_an_hour_and_reaches_the_late_window_plus_an_hour() -> None:
    assert Settings.from_env({}).dedupe_window_s == 3600.0
    edge = Settings.from_env({"METER_LATE_WINDOW": "6h", "METER_DEDUPE_WINDOW": "7h"})
    assert edge.dedupe_window_s == 7 * 3600.0

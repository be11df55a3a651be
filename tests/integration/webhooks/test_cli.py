"""`meter webhooks …`: the API's endpoint management from the command line, per tenant."""

from __future__ import annotations

import pytest

from meter.cli import main
from meter.webhooks import signing


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["webhooks", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_webhooks_commands(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("METER_DATABASE_URL", database_url)
    code, out, err = run(
        capsys,
        "create",
        "https://hooks.example.com/x",
        "--events",
        "usage.limit_reached,usage.limit_cleared",
        "--tenant",
        "acme",
    )
    assert code == 0, err
    line, secret = out.splitlines()
    endpoint = line.split("\t")[0]
    assert endpoint.startswith("we_")
    assert secret.startswith(signing.SECRET_PREFIX)
    assert "shown only this once" in err

    code, out, _ = run(capsys, "list", "--tenant", "acme")
    assert out.split("\t")[:2] == [endpoint, "acme"]
    assert out.strip().endswith("enabled")
    assert run(capsys, "list", "--tenant", "beta")[1] == ""

    code, out, _ = run(capsys, "rotate", endpoint, "--tenant", "acme", "--expires-in", "60")
    assert code == 0
    assert out.strip() != secret

    assert run(capsys, "disable", endpoint, "--tenant", "acme")[1].strip().endswith("disabled")
    assert "disabled with `meter webhooks disable`" in run(capsys, "list")[1]
    assert run(capsys, "enable", endpoint, "--tenant", "acme")[1].strip().endswith("enabled")
    assert run(capsys, "deliveries", endpoint, "--tenant", "acme") == (0, "", "")
    # Another tenant's endpoint does not exist for it.
    code, _, err = run(capsys, "disable", endpoint, "--tenant", "beta")
    assert code == 1
    assert "no webhook endpoint" in err
    code, _, err = run(capsys, "redeliver", endpoint, "whd_nope", "--tenant", "acme")
    assert code == 1
    # Bad input: the API's per-field sentence, exit 2.
    code, _, err = run(capsys, "create", "ftp://x", "--events", "*", "--tenant", "acme")
    assert code == 2
    assert "`url` must start with http:// or https://" in err
    code, _, err = run(capsys, "create", "https://x", "--events", "nope", "--tenant", "acme")
    assert code == 2
    assert "`enabled_events[0]`" in err
    assert run(capsys, "delete", endpoint, "--tenant", "acme")[0] == 0
    assert run(capsys, "list")[1] == ""

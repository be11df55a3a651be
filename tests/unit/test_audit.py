"""`make audit`'s verdict says what was checked: never "no vulnerabilities" for pins not audited."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

PINS = {"aiohttp": "3.14.5", "redis": "7.0.0", "stripe": "14.0.0"}


@pytest.fixture(scope="module")
def audit() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "scripts" / "audit.py"
    spec = importlib.util.spec_from_file_location("meter_audit_script", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_every_pin_audited_and_clean_is_ok(audit: ModuleType) -> None:
    outcome = audit.Outcome(pins=PINS, vulns={name: [] for name in PINS})
    status, lines = audit.verdict(outcome, required=True)
    assert status == 0
    assert lines == ["audit: OK: 3 of 3 locked packages audited, none vulnerable"]


def test_nothing_audited_is_skipped_loudly_never_clean(audit: ModuleType) -> None:
    outcome = audit.Outcome(
        pins=PINS,
        unaudited=dict.fromkeys(PINS, "Dependency not found on PyPI"),
        service_errors={"pypi": "3 of 3 pins answered with no advisory data", "osv": "DNS"},
    )
    status, lines = audit.verdict(outcome, required=False)
    text = "\n".join(lines)
    assert status == 0
    assert lines[0].startswith("audit: SKIPPED: 0 of 3 locked packages could be audited")
    assert "NOT checked" in text
    assert "pypi: 3 of 3" in text
    assert "osv: DNS" in text
    assert "no known vulnerabilities" not in text.lower()
    assert "OK" not in text
    assert audit.verdict(outcome, required=True)[0] == 2


def test_some_audited_names_the_rest(audit: ModuleType) -> None:
    outcome = audit.Outcome(
        pins=PINS,
        vulns={"aiohttp": [], "redis": []},
        unaudited={"stripe": "no service answered for it"},
        service_errors={"osv": "timeout"},
    )
    status, lines = audit.verdict(outcome, required=False)
    assert status == 0
    assert lines[0].startswith("audit: INCOMPLETE: 2 of 3 locked packages audited")
    assert "NOT audited: stripe" in lines[0]
    assert audit.verdict(outcome, required=True)[0] == 2


def test_a_known_vulnerability_fails_whatever_else(audit: ModuleType) -> None:
    vuln = {"id": "GHSA-xxxx", "fix_versions": ["3.14.6"]}
    outcome = audit.Outcome(
        pins=PINS,
        vulns={"aiohttp": [vuln], "redis": []},
        unaudited={"stripe": "no service answered for it"},
    )
    status, lines = audit.verdict(outcome, required=False)
    assert status == 1
    assert lines[0] == "VULNERABLE aiohttp 3.14.5: GHSA-xxxx (fixed in 3.14.6)"
    assert lines[-1] == (
        "audit: FAILED: 1 of 3 locked packages have known vulnerabilities (1 not audited)"
    )


def test_pins_follow_the_platform_markers(audit: ModuleType, tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text(
        "# exported\naiohttp==3.14.5\n"
        "colorama==0.4.6 ; sys_platform == 'never'\n"
        "uvloop==0.23.0 ; python_version >= '3'\n    # via meter\n"
    )
    assert audit.read_pins(req) == {"aiohttp": "3.14.5", "uvloop": "0.23.0"}

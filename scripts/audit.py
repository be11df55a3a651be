"""`make audit`: known vulnerabilities in the locked dependencies, with pip-audit.

Exports uv.lock (every extra and the dev group) as pinned requirements and asks pip-audit about
each pin: PyPI's advisory data first, then OSV for the pins PyPI could not answer for. The last
line printed is the verdict, and it never claims more than was checked:
  `audit: OK`          every pin was audited, none has a known vulnerability (exit 0);
  `audit: FAILED`      a known vulnerability: upgrade it in the lock (`uv lock --upgrade-package
                       NAME`), or, when no fixed version exists, add its id to IGNORED with the
                       reason (exit 1; also when pip-audit itself breaks);
  `audit: SKIPPED` /   no pin, or only some, could be audited (no advisory service answered);
  `audit: INCOMPLETE`  each service's reason is printed. Exit 0, so that a machine that cannot
                       reach the advisory services still runs CI, unless METER_AUDIT_REQUIRED=1
                       (exit 2), which is for machines that can.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.markers import Marker

# Vulnerability id → why it is accepted for now. Keep each with a reason and a date.
IGNORED: dict[str, str] = {}
SERVICES = ("pypi", "osv")
TIMEOUT_S = 15
# pip-audit's "not found on PyPI" means PyPI's per-version JSON, which carries the advisories,
# did not answer for that pin (a mirror or proxy may serve the index but not that API).
NOT_FOUND_HINT = " (PyPI's per-version JSON API, which carries the advisories, did not answer)"


@dataclass
class Outcome:
    """What the services said: per pin its vulnerabilities, or why no service could audit it."""

    pins: dict[str, str]  # name → version
    vulns: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # audited pins only
    unaudited: dict[str, str] = field(default_factory=dict)  # name → last reason
    service_errors: dict[str, str] = field(default_factory=dict)  # service → why it failed


def verdict(outcome: Outcome, required: bool) -> tuple[int, list[str]]:
    """Exit status and the lines to print; pure, so the wording is tested (tests/unit)."""
    total, audited = len(outcome.pins), len(outcome.vulns)
    lines = [
        f"VULNERABLE {name} {outcome.pins[name]}: {v['id']} (fixed in "
        f"{', '.join(v.get('fix_versions') or []) or 'no fixed version'})"
        for name, found in sorted(outcome.vulns.items())
        for v in found
    ]
    vulnerable = sum(1 for found in outcome.vulns.values() if found)
    reasons = [f"audit:   {svc}: {why}" for svc, why in outcome.service_errors.items()]
    if outcome.unaudited and not outcome.service_errors:
        reasons = [f"audit:   {next(iter(outcome.unaudited.values()))}"]
    if vulnerable:
        lines.append(
            f"audit: FAILED: {vulnerable} of {total} locked packages have known vulnerabilities"
            + (f" ({total - audited} not audited)" if audited < total else "")
        )
        return 1, lines
    if audited == total and total:
        lines.append(f"audit: OK: {audited} of {total} locked packages audited, none vulnerable")
        return 0, lines
    status = 2 if required else 0
    if audited == 0:
        lines.append(
            f"audit: SKIPPED: 0 of {total} locked packages could be audited; their "
            "vulnerabilities were NOT checked. No advisory service answered:"
        )
    else:
        names = ", ".join(sorted(outcome.unaudited))
        lines.append(
            f"audit: INCOMPLETE: {audited} of {total} locked packages audited, none vulnerable; "
            f"NOT audited: {names}. Why:"
        )
    lines += reasons
    lines.append(
        "audit: failing the build for this needs METER_AUDIT_REQUIRED=1"
        if not required
        else "audit: METER_AUDIT_REQUIRED=1: failing"
    )
    return status, lines


def export_pins(tmp: Path) -> Path:
    req = tmp / "requirements.txt"
    uv = shlex.split(os.environ.get("UV", "uv"))
    export = ["export", "--frozen", "--all-extras", "--format", "requirements-txt"]
    subprocess.run(
        [*uv, *export, "--no-hashes", "--no-emit-project", "--output-file", str(req)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return req


def read_pins(req: Path) -> dict[str, str]:
    """name → version of the pins installed on this platform (as pip-audit judges markers)."""
    pins = {}
    for line in req.read_text().splitlines():
        spec, _, marker = line.partition(";")
        spec = spec.strip()
        if not spec or spec.startswith(("#", "-")) or "==" not in spec:
            continue
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        name, version = spec.split("==", 1)
        pins[name.strip().lower()] = version.strip()
    return pins


def run_pip_audit(service: str, req: Path, tmp: Path) -> tuple[list[dict[str, Any]] | None, str]:
    """pip-audit's per-pin answers, or None and the reason (its last stderr line)."""
    report = tmp / f"{service}.json"
    ignores = [arg for vuln in IGNORED for arg in ("--ignore-vuln", vuln)]
    cmd = [sys.executable, "-m", "pip_audit", "-r", str(req), "--disable-pip", "--no-deps"]
    cmd += ["-s", service, "--timeout", str(TIMEOUT_S), "--progress-spinner", "off"]
    # Its own summary ("No known vulnerabilities found") would be printed even when every pin was
    # skipped; only this script's verdict speaks.
    done = subprocess.run(
        [*cmd, "-f", "json", "-o", str(report), *ignores],
        capture_output=True,
        text=True,
        check=False,
    )
    if not report.exists():
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return None, last[:300]
    deps: list[dict[str, Any]] = json.loads(report.read_text())["dependencies"]
    return deps, ""


def main() -> int:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        req = export_pins(tmp)
        outcome = Outcome(pins=read_pins(req))
        if not outcome.pins:
            print("audit: FAILED: the export of uv.lock holds no pinned package")
            return 1
        for service in SERVICES:
            todo = [n for n in outcome.pins if n not in outcome.vulns]
            if not todo:
                break
            pending = tmp / f"{service}-requirements.txt"
            pending.write_text("".join(f"{n}=={outcome.pins[n]}\n" for n in todo))
            deps, error = run_pip_audit(service, pending, tmp)
            if deps is None:
                outcome.service_errors[service] = error
                continue
            skipped = [d for d in deps if "skip_reason" in d]
            for dep in deps:
                name = dep["name"].lower()
                if "skip_reason" in dep:
                    outcome.unaudited[name] = dep["skip_reason"]
                else:
                    outcome.vulns[name] = dep.get("vulns") or []
                    outcome.unaudited.pop(name, None)
            if skipped:
                outcome.service_errors[service] = (
                    f"{len(skipped)} of {len(deps)} pins answered with no advisory data, "
                    f"e.g. {skipped[0]['skip_reason']}"
                    + (NOT_FOUND_HINT if "not found on PyPI" in skipped[0]["skip_reason"] else "")
                )
        for name in outcome.pins:
            if name not in outcome.vulns and name not in outcome.unaudited:
                outcome.unaudited[name] = "no service answered for it"
    status, lines = verdict(outcome, os.environ.get("METER_AUDIT_REQUIRED") == "1")
    print("\n".join(lines), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
